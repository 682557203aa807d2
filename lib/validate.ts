// validate.ts — argument checks at the API boundary: every bad input becomes a
// DvsError with a stable code before anything reaches native code.
import { DvsError } from './errors.js';

export const MAX_PAYLOAD = 1 << 20;
export const MAX_DC = 4095;
export const MAX_EP = 16777215;
export const MAX_NODE = 1023;
/** Endpoint names: at most 31 bytes of UTF-8 (the arena's name field), no NUL. */
export const MAX_NAME = 31;
export const ANY = -1;

/** An endpoint in the caller's DC (a number) or spelled out ({ dc, ep }). */
export type Address = number | { dc: number; ep: number };
export type Payload = Uint8Array | string | null | undefined;

function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

export function checkNode(v: unknown): number {
  if (!isInt(v)) throw new DvsError('EDVSINVAL', `node must be an integer, got ${describe(v)}`);
  if (v < 0 || v > MAX_NODE) throw new DvsError('EDVSBADNODEID', `node must be in [0, ${MAX_NODE}], got ${v}`);
  return v;
}

export function checkDc(v: unknown): number {
  if (!isInt(v)) throw new DvsError('EDVSINVAL', `dc must be an integer, got ${describe(v)}`);
  if (v < 0 || v > MAX_DC) throw new DvsError('EDVSBADDCID', `dc must be in [0, ${MAX_DC}], got ${v}`);
  return v;
}

export function checkEp(v: unknown): number {
  if (!isInt(v)) throw new DvsError('EDVSINVAL', `endpoint must be an integer, got ${describe(v)}`);
  if (v < 0 || v > MAX_EP) throw new DvsError('EDVSENDPOINT', `endpoint must be in [0, ${MAX_EP}], got ${v}`);
  return v;
}

/** Resolves an address to an endpoint number in DC `dc` (no message crosses DCs). */
export function checkAddress(dst: unknown, dc: number): number {
  if (typeof dst === 'number') return checkEp(dst);
  if (dst !== null && typeof dst === 'object' && 'ep' in dst) {
    const d = dst as { dc?: unknown; ep: unknown };
    if (d.dc !== undefined && checkDc(d.dc) !== dc)
      throw new DvsError('EDVSBADDCID', `endpoint ${String(d.ep)} is in DC ${String(d.dc)}; this endpoint is in DC ${dc}`);
    return checkEp(d.ep);
  }
  throw new DvsError('EDVSINVAL', `destination must be an endpoint number or { dc, ep }, got ${describe(dst)}`);
}

/** A name as the arena stores it: a string of at most MAX_NAME bytes of UTF-8 without NUL ('' = none). */
export function isName(v: unknown): v is string {
  return typeof v === 'string' && v.length <= MAX_NAME && !v.includes('\0') && Buffer.byteLength(v) <= MAX_NAME;
}

/** A non-empty endpoint name (what lookups take). */
export function checkName(v: unknown): string {
  if (typeof v !== 'string') throw new DvsError('EDVSINVAL', `name must be a string, got ${describe(v)}`);
  if (!v || !isName(v)) throw new DvsError('EDVSINVAL', `name must be 1-${MAX_NAME} bytes of UTF-8 without NUL, got ${describe(v)}`);
  return v;
}

export function checkSource(v: unknown): number {
  return v === undefined || v === ANY ? ANY : checkEp(v);
}

/** undefined = wait without limit (-1); 0 = do not wait. */
export function checkTimeout(v: unknown): number {
  if (v === undefined || v === Infinity) return -1;
  if (typeof v !== 'number' || Number.isNaN(v) || v < 0)
    throw new DvsError('EDVSINVAL', `timeoutMs must be a number >= 0, got ${describe(v)}`);
  return Math.min(Math.ceil(v), 0x7fffffff);
}

export function checkBits(v: unknown): number {
  if (!isInt(v) || v < 0 || v > 0xffffffff)
    throw new DvsError('EDVSINVAL', `notify bits must be an integer in [0, 2^32), got ${describe(v)}`);
  return v;
}

export function checkPayload(p: unknown): Uint8Array | string | null {
  if (p === undefined || p === null) return null;
  if (p instanceof Uint8Array) {
    if (p.byteLength > MAX_PAYLOAD) throw new DvsError('EDVS2BIG', `payload is ${p.byteLength} bytes; the limit is 1 MiB`);
    return p;
  }
  if (typeof p === 'string') return p;
  throw new DvsError('EDVSINVAL', `payload must be a Uint8Array (or Buffer) or a string, got ${describe(p)}`);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v === 'string' ? JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v) : String(v);
}
