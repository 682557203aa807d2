// protocol.ts — the migration's messages between agents ({k:'mig'} in CONTROL
// frames, JSON) and the image chunks (binary CONTROL frames), with their
// validation: everything here crossed the network, so every field is checked
// before use and a malformed message is dropped (and logged) by the caller.
//
// The orchestrator (in the source's agent) asks, each participant answers:
//   {k:'mig', t:STEP, id, ...}            orchestrator → participant
//   {k:'mig', t:'re', id, step, ok, ...}  participant → orchestrator
//   {k:'mig', t:'progress', id, state}    destination → orchestrator (unsolicited)
// and the agent that received `migrate` hands it to the source's agent:
//   {k:'mig', t:'run', rid, dc, ep, to, method, quiesceTimeoutMs?, timeoutMs?}
//   {k:'mig', t:'result', rid, ok, result | error}
import { DvsError, codes, type DvsErrorCode } from '../errors.js';
import { isName, MAX_DC, MAX_EP, MAX_NODE } from '../validate.js';

/** Backends of `migrate` (issue 5 builds 'state'; 'ptrace' and 'criu' come with issue 6). */
export const METHODS = ['state', 'ptrace', 'criu'] as const;
export type Method = (typeof METHODS)[number];

/** Image chunk payload (raw bytes per binary CONTROL frame; frames are ≤ 1 MiB with the header). */
export const CHUNK_BYTES = (1 << 20) - 4096;
/** Images larger than this are refused. */
export const MAX_IMAGE_BYTES = 256 << 20;
export const MAX_CHUNKS = Math.ceil(MAX_IMAGE_BYTES / CHUNK_BYTES);
/** [tag u8][id u32][index u32] before a chunk's bytes. */
export const CHUNK_HEADER = 9;
/** First byte of a binary migration frame (JSON control messages start with '{'). */
export const BINARY_TAG = 0x01;

export type ErrorInfo = { code: string; message: string };

/** Where the endpoint is when the migration starts. */
interface Origin {
  id: number;
  dc: number;
  ep: number;
  /** The source node and the endpoint's incarnation and pid there. */
  src: number;
  gen: number;
  pid: number;
  name: string;
}
export interface StartMsg extends Origin {
  t: 'start';
}
/** At the destination: a standby process of the service's module. */
export interface PrepareMsg extends Origin {
  t: 'prepare';
  module: string;
  args: string[];
  timeoutMs: number;
}
/** At the destination, after the image chunks: restore, then commit there (adopt, the image's messages answered). */
export interface RestoreMsg {
  t: 'restore';
  id: number;
  bytes: number;
  chunks: number;
  /** Bounds restore(), then the restored service answering the image's messages. */
  timeoutMs: number;
  commitTimeoutMs: number;
}
export interface CommitMsg {
  t: 'commit';
  id: number;
  /** Where the endpoint lives from now on, its incarnation and pid there. */
  dest: number;
  gen: number;
  pid: number;
  timeoutMs: number;
}
export interface RollbackMsg {
  t: 'rollback';
  id: number;
}
export type StepMsg = StartMsg | PrepareMsg | RestoreMsg | CommitMsg | RollbackMsg;
export type Step = StepMsg['t'];

/** Destination → orchestrator, unsolicited: the image is restored (the commit follows at once). */
export interface ProgressMsg {
  t: 'progress';
  id: number;
  state: 'restored';
}

export interface ReplyMsg {
  t: 're';
  id: number;
  step: Step;
  ok: boolean;
  data?: Record<string, unknown>;
  error?: ErrorInfo;
}

export interface RunMsg {
  t: 'run';
  rid: number;
  dc: number;
  ep: number;
  to: number;
  method: Method;
  quiesceTimeoutMs?: number;
  timeoutMs?: number;
}
export interface ResultMsg {
  t: 'result';
  rid: number;
  ok: boolean;
  result?: Record<string, unknown>;
  error?: ErrorInfo;
}

export type MigMsg = StepMsg | ReplyMsg | ProgressMsg | RunMsg | ResultMsg;

const u32 = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;
const safe = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const dcOk = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= MAX_DC;
const epOk = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= MAX_EP;
const nodeOk = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0 && (v as number) <= MAX_NODE;
const msOk = (v: unknown): v is number => Number.isInteger(v) && (v as number) > 0 && (v as number) <= 600_000;
const STEPS: readonly string[] = ['start', 'prepare', 'restore', 'commit', 'rollback'];

function errorInfo(v: unknown): ErrorInfo | null {
  if (typeof v !== 'object' || v === null) return null;
  const { code, message } = v as { code?: unknown; message?: unknown };
  if (typeof code !== 'string' || code.length > 40 || typeof message !== 'string' || message.length > 4000) return null;
  return { code, message };
}

function plainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates a {k:'mig'} message from a peer; null when malformed. */
export function parseMig(x: unknown): MigMsg | null {
  if (!plainObject(x)) return null;
  const m = x as Record<string, unknown>;
  switch (m.t) {
    case 'start':
    case 'prepare': {
      if (!u32(m.id) || !dcOk(m.dc) || !epOk(m.ep) || !nodeOk(m.src) || !u32(m.gen) || !u32(m.pid) || !isName(m.name)) return null;
      const base = { id: m.id, dc: m.dc, ep: m.ep, src: m.src, gen: m.gen, pid: m.pid, name: m.name };
      if (m.t === 'start') return { t: 'start', ...base };
      if (typeof m.module !== 'string' || !m.module.startsWith('/') || m.module.length > 4096 || m.module.includes('\0')) return null;
      if (!Array.isArray(m.args) || m.args.length > 256 || !m.args.every((a) => typeof a === 'string' && a.length <= 4096 && !a.includes('\0'))) return null;
      if (!msOk(m.timeoutMs)) return null;
      return { t: 'prepare', ...base, module: m.module, args: m.args as string[], timeoutMs: m.timeoutMs };
    }
    case 'restore':
      if (!u32(m.id) || !safe(m.bytes) || m.bytes > MAX_IMAGE_BYTES || !safe(m.chunks) || m.chunks > MAX_CHUNKS || !msOk(m.timeoutMs) || !msOk(m.commitTimeoutMs)) return null;
      return { t: 'restore', id: m.id, bytes: m.bytes, chunks: m.chunks, timeoutMs: m.timeoutMs, commitTimeoutMs: m.commitTimeoutMs };
    case 'progress':
      if (!u32(m.id) || m.state !== 'restored') return null;
      return { t: 'progress', id: m.id, state: 'restored' };
    case 'commit':
      if (!u32(m.id) || !nodeOk(m.dest) || !u32(m.gen) || !u32(m.pid) || !msOk(m.timeoutMs)) return null;
      return { t: 'commit', id: m.id, dest: m.dest, gen: m.gen, pid: m.pid, timeoutMs: m.timeoutMs };
    case 'rollback':
      if (!u32(m.id)) return null;
      return { t: 'rollback', id: m.id };
    case 're': {
      if (!u32(m.id) || typeof m.step !== 'string' || !STEPS.includes(m.step) || typeof m.ok !== 'boolean') return null;
      if (m.data !== undefined && !plainObject(m.data)) return null;
      const error = m.error === undefined ? undefined : errorInfo(m.error);
      if (error === null || (!m.ok && !error)) return null;
      return { t: 're', id: m.id, step: m.step as Step, ok: m.ok, data: m.data as Record<string, unknown> | undefined, error };
    }
    case 'run': {
      if (!safe(m.rid) || !dcOk(m.dc) || !epOk(m.ep) || !nodeOk(m.to) || !METHODS.includes(m.method as Method)) return null;
      if (m.quiesceTimeoutMs !== undefined && !msOk(m.quiesceTimeoutMs)) return null;
      if (m.timeoutMs !== undefined && !msOk(m.timeoutMs)) return null;
      return { t: 'run', rid: m.rid, dc: m.dc, ep: m.ep, to: m.to, method: m.method as Method, quiesceTimeoutMs: m.quiesceTimeoutMs as number | undefined, timeoutMs: m.timeoutMs as number | undefined };
    }
    case 'result': {
      if (!safe(m.rid) || typeof m.ok !== 'boolean') return null;
      if (m.result !== undefined && !plainObject(m.result)) return null;
      const error = m.error === undefined ? undefined : errorInfo(m.error);
      if (error === null || (!m.ok && !error) || (m.ok && !m.result)) return null;
      return { t: 'result', rid: m.rid, ok: m.ok, result: m.result as Record<string, unknown> | undefined, error };
    }
    default:
      return null;
  }
}

/** A binary frame: one chunk of a migration image. */
export interface Chunk {
  id: number;
  index: number;
  bytes: Buffer;
}

/** Writes a chunk's header ([tag u8][id u32][index u32], little-endian) at the start of `frame`; the bytes follow. */
export function chunkHeader(frame: Buffer, id: number, index: number): void {
  frame[0] = BINARY_TAG;
  frame.writeUInt32LE(id >>> 0, 1);
  frame.writeUInt32LE(index >>> 0, 5);
}

export function decodeChunk(b: Buffer): Chunk | null {
  if (b.length < CHUNK_HEADER || b[0] !== BINARY_TAG || b.length - CHUNK_HEADER > CHUNK_BYTES) return null;
  return { id: b.readUInt32LE(1), index: b.readUInt32LE(5), bytes: b.subarray(CHUNK_HEADER) };
}

/** An error as it travels (code and message). */
export function toInfo(e: unknown): ErrorInfo {
  if (e instanceof DvsError) return { code: e.code, message: e.message.replace(/^EDVS[A-Z0-9]+: /, '') };
  return { code: 'EDVSINVAL', message: e instanceof Error ? e.message : String(e) };
}

/** Back to a DvsError (unknown codes become EDVSINVAL, the text says which). */
export function fromInfo(i: ErrorInfo, prefix = ''): DvsError {
  const known = Object.prototype.hasOwnProperty.call(codes, i.code);
  return new DvsError((known ? i.code : 'EDVSINVAL') as DvsErrorCode, `${prefix}${known ? '' : `${i.code}: `}${i.message}`);
}
