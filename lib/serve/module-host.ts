// module-host.ts — loads a service module for `dvs serve` and calls its hooks:
// handle(msg) (sync or async; for a call its return value is the reply, a
// throw replies an error payload), snapshot(), restore(bytes), init(ctx).
// README "dvs serve" describes the contract.
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { DvsError } from '../errors.js';

export type ServiceMessageKind = 'send' | 'call' | 'notify';

/** What handle() receives. */
export interface ServiceMessage {
  readonly kind: ServiceMessageKind;
  readonly dc: number;
  /** The sender's endpoint number and node. */
  readonly src: number;
  readonly srcNode: number;
  /** Notification bits (kind 'notify'; 0 otherwise). */
  readonly bits: number;
  /** The payload: valid until handle() returns (or its promise settles); copy it to keep it. */
  readonly payload: Uint8Array;
  /** The payload as UTF-8. */
  text(): string;
  /** The payload parsed as JSON (throws on bad JSON: for a call, that replies an error payload). */
  json(): unknown;
}

/** What init() receives. */
export interface ServiceContext {
  dc: number;
  ep: number;
  node: number;
  /** The endpoint's name ('' when none). */
  name: string;
  /** Positional arguments after the module on the `dvs serve` command line. */
  args: string[];
  /** True when the process starts as a migration's destination (restore() follows). */
  restoring: boolean;
}

/** A service module's exports (ESM named exports, or a default export holding them). */
export interface ServiceModule {
  handle(msg: ServiceMessage): unknown;
  snapshot?(): Uint8Array | string | null | undefined | Promise<Uint8Array | string | null | undefined>;
  restore?(bytes: Uint8Array): unknown;
  init?(ctx: ServiceContext): unknown;
}

const decoder = new TextDecoder();

export class Msg implements ServiceMessage {
  constructor(
    readonly kind: ServiceMessageKind,
    readonly dc: number,
    readonly src: number,
    readonly srcNode: number,
    readonly bits: number,
    readonly payload: Uint8Array,
  ) {}

  text(): string {
    return decoder.decode(this.payload);
  }

  json(): unknown {
    return JSON.parse(this.text());
  }
}

/** Absolute path of a module argument (relative to the current directory). */
export function modulePath(p: string): string {
  if (typeof p !== 'string' || !p) throw new DvsError('EDVSINVAL', 'dvs serve needs a module path');
  return isAbsolute(p) ? p : resolve(process.cwd(), p);
}

export function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function';
}

/** Loads and checks a module: handle() is required; snapshot/restore/init are optional functions. */
export async function loadModule(path: string): Promise<ServiceModule> {
  let ns: Record<string, unknown>;
  try {
    ns = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (e) {
    throw new DvsError('EDVSINVAL', `cannot load service module ${path}: ${(e as Error)?.message ?? String(e)}`);
  }
  // ESM named exports, or (CommonJS / `export default {...}`) the default export.
  const dflt = ns.default as Record<string, unknown> | undefined;
  const src = typeof ns.handle === 'function' ? ns : dflt && typeof dflt === 'object' && typeof dflt.handle === 'function' ? dflt : null;
  if (!src) throw new DvsError('EDVSINVAL', `service module ${path} does not export a handle(msg) function`);
  for (const k of ['snapshot', 'restore', 'init'])
    if (src[k] !== undefined && typeof src[k] !== 'function') throw new DvsError('EDVSINVAL', `service module ${path}: '${k}' must be a function`);
  if ((typeof src.snapshot === 'function') !== (typeof src.restore === 'function'))
    throw new DvsError('EDVSINVAL', `service module ${path} must export both snapshot() and restore(bytes), or neither`);
  const bind = (k: string): ((...a: unknown[]) => unknown) | undefined =>
    typeof src[k] === 'function' ? (src[k] as (...a: unknown[]) => unknown).bind(src) : undefined;
  return {
    handle: bind('handle') as ServiceModule['handle'],
    snapshot: bind('snapshot') as ServiceModule['snapshot'],
    restore: bind('restore'),
    init: bind('init'),
  };
}


/** The reply payload for handle()'s return value: undefined → empty; string and bytes as they are; anything else → JSON. */
export function replyPayload(v: unknown): Uint8Array | string | null {
  if (v === undefined) return null;
  if (typeof v === 'string' || v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  const s = JSON.stringify(v);
  return s === undefined ? null : s;
}

/**
 * The reply to a call whose handle() threw (or whose reply could not be
 * sent): UTF-8 JSON {"error":{"code":C,"message":M}} — C is the error's
 * `code` property when it is a string (a DvsError's EDVS… code, or the
 * service's own), otherwise "ERROR".
 */
export function errorPayload(e: unknown): string {
  const code = typeof (e as { code?: unknown })?.code === 'string' ? (e as { code: string }).code : 'ERROR';
  const message = e instanceof Error ? e.message : String(e);
  return JSON.stringify({ error: { code, message } });
}

/** snapshot()'s result as bytes (null: no state). */
export function snapshotBytes(v: unknown): Uint8Array | null {
  if (v === undefined || v === null) return null;
  if (v instanceof Uint8Array) return v;
  if (typeof v === 'string') return Buffer.from(v);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  throw new DvsError('EDVSINVAL', `snapshot() must return a Uint8Array or a string, got ${typeof v}`);
}
