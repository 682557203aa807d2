// image.ts — the service image of the `state` migration backend: the module's
// snapshot() bytes plus the messages drained from the mailbox during the
// quiesce, in order (docs/DESIGN.md "Service image"). Versioned, SHA-256
// checksummed; the decoder validates every field and length, so a truncated,
// corrupt or hostile file is a DvsError (EDVSINVAL), never a crash.
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync, writevSync } from 'node:fs';
import { DvsError } from '../errors.js';
import { isName, MAX_DC, MAX_EP, MAX_NODE, MAX_PAYLOAD } from '../validate.js';

/** "DVSS" (dvs service), read as a little-endian u32. */
export const IMAGE_MAGIC = 0x53535644;
export const IMAGE_VERSION = 1;
export const IMAGE_HEADER_BYTES = 40;
export const IMAGE_MESSAGE_HEADER_BYTES = 28;
export const IMAGE_TRAILER_BYTES = 32;
/** Flag bit 0: the image carries state (the module has snapshot() and it returned bytes). */
const FLAG_STATE = 1;
const MAX_META = 64 * 1024;
const MAX_ARGS = 1024;
const MAX_MODULE_PATH = 4096;

export type ImageMessageKind = 'send' | 'call' | 'notify';
const KIND_CODE: Record<ImageMessageKind, number> = { send: 1, call: 2, notify: 4 };
const CODE_KIND = new Map<number, ImageMessageKind>([
  [1, 'send'],
  [2, 'call'],
  [4, 'notify'],
]);

/** A message drained from the mailbox during a quiesce (kept, not handled). */
export interface ImageMessage {
  kind: ImageMessageKind;
  /** The sender's endpoint, node and incarnation. */
  src: number;
  srcNode: number;
  srcGen: number;
  /** A call's id (its reply target is { dc, ep: src, gen: srcGen, node: srcNode, callId }). */
  callId: number;
  /** Notification bits (kind 'notify'). */
  bits: number;
  payload: Uint8Array;
}

export interface ServiceImage {
  /** The migration id (also the fence token). */
  id: number;
  dc: number;
  ep: number;
  /** The node the image was taken on. */
  node: number;
  /** Absolute path of the service's module, its positional arguments and its endpoint name ('' = none). */
  module: string;
  args: string[];
  name: string;
  /** snapshot() bytes; null for a service without the hook (or whose snapshot() returned nothing). */
  state: Uint8Array | null;
  /** In mailbox order. */
  messages: ImageMessage[];
}

function u32ok(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;
}

/**
 * Serializes an image as the pieces of the file, without copying the state
 * (a fresh buffer costs more in page faults than the copy itself): [header
 * and metadata, state, messages, SHA-256]. `writeImageFile` writes them with
 * one writev; `encodeImage` concatenates them.
 */
export function encodeImageParts(img: ServiceImage): { parts: Uint8Array[]; bytes: number } {
  if (!u32ok(img.id) || img.id === 0) throw new DvsError('EDVSINVAL', `image id must be an integer in [1, 2^32), got ${String(img.id)}`);
  const meta = Buffer.from(JSON.stringify({ module: img.module, args: img.args, name: img.name }));
  if (meta.length > MAX_META) throw new DvsError('EDVSINVAL', `image metadata is ${meta.length} bytes; the limit is ${MAX_META}`);
  const state = img.state;
  const stateLen = state ? state.byteLength : 0;
  if (stateLen > 0xffffffff) throw new DvsError('EDVS2BIG', `snapshot is ${stateLen} bytes; an image holds at most 4 GiB - 1`);
  const head = Buffer.allocUnsafe(IMAGE_HEADER_BYTES + meta.length);
  head.writeUInt32LE(IMAGE_MAGIC, 0);
  head.writeUInt16LE(IMAGE_VERSION, 4);
  head.writeUInt16LE(state ? FLAG_STATE : 0, 6);
  [img.id, img.dc, img.ep, img.node, meta.length, stateLen, img.messages.length, 0].forEach((v, i) => head.writeUInt32LE(v >>> 0, 8 + i * 4));
  meta.copy(head, IMAGE_HEADER_BYTES);
  let msgBytes = 0;
  for (const m of img.messages) msgBytes += IMAGE_MESSAGE_HEADER_BYTES + m.payload.byteLength;
  const msgs = Buffer.allocUnsafe(msgBytes);
  let o = 0;
  for (const m of img.messages) {
    const k = KIND_CODE[m.kind];
    if (k === undefined) throw new DvsError('EDVSINVAL', `image message kind must be send, call or notify, got ${String(m.kind)}`);
    // kind in the low byte, 3 reserved zero bytes; then src, srcNode, srcGen, callId, bits, payload length
    [k, m.src, m.srcNode, m.srcGen, m.callId, m.bits, m.payload.byteLength].forEach((v, i) => msgs.writeUInt32LE(v >>> 0, o + i * 4));
    o += IMAGE_MESSAGE_HEADER_BYTES;
    msgs.set(m.payload, o);
    o += m.payload.byteLength;
  }
  const parts: Uint8Array[] = state ? [head, state, msgs] : [head, msgs];
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  parts.push(hash.digest());
  return { parts, bytes: head.length + stateLen + msgBytes + IMAGE_TRAILER_BYTES };
}

/** Serializes an image (see docs/DESIGN.md "Service image") into one buffer. */
export function encodeImage(img: ServiceImage): Buffer {
  const { parts, bytes } = encodeImageParts(img);
  return Buffer.concat(parts, bytes);
}

/** Writes an image file (mode 0600) without assembling it in memory first; returns its size. */
export function writeImageFile(file: string, img: ServiceImage): number {
  const { parts, bytes } = encodeImageParts(img);
  const fd = openSync(file, 'w', 0o600);
  try {
    let written = 0;
    while (written < bytes) {
      // writev may write less than asked: go on from where it stopped.
      let skip = written;
      const rest: Uint8Array[] = [];
      for (const part of parts) {
        if (skip >= part.byteLength) skip -= part.byteLength;
        else {
          rest.push(skip ? part.subarray(skip) : part);
          skip = 0;
        }
      }
      written += writevSync(fd, rest);
    }
  } finally {
    closeSync(fd);
  }
  return bytes;
}

/**
 * Reads an image file; into `scratch` (a buffer whose pages are already
 * touched: faulting in fresh memory costs more than reading) when it fits.
 */
export function readImageFile(file: string, scratch?: Buffer): Buffer {
  const fd = openSync(file, 'r');
  try {
    const size = fstatSync(fd).size;
    const buf = scratch && scratch.length >= size ? scratch.subarray(0, size) : Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      const n = readSync(fd, buf, got, size - got, got);
      if (n === 0) break;
      got += n;
    }
    return got === size ? buf : buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

function bad(what: string): DvsError {
  return new DvsError('EDVSINVAL', `bad service image: ${what}`);
}

/**
 * Parses and validates an image. Payloads and state are views into `bytes`
 * (no copies). Throws DvsError EDVSINVAL naming the first problem found.
 */
export function decodeImage(bytes: Uint8Array): ServiceImage {
  if (!(bytes instanceof Uint8Array)) throw bad('not a byte array');
  const len = bytes.byteLength;
  if (len < IMAGE_HEADER_BYTES + IMAGE_TRAILER_BYTES) throw bad(`truncated (${len} bytes; a header and checksum alone are ${IMAGE_HEADER_BYTES + IMAGE_TRAILER_BYTES})`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, len);
  const u32 = (off: number): number => dv.getUint32(off, true);
  if (u32(0) !== IMAGE_MAGIC) throw bad('wrong magic (not a dvs service image)');
  const version = dv.getUint16(4, true);
  if (version !== IMAGE_VERSION) throw bad(`unsupported version ${version} (this dvs reads version ${IMAGE_VERSION})`);
  const body = len - IMAGE_TRAILER_BYTES;
  const sum = createHash('sha256').update(bytes.subarray(0, body)).digest();
  if (!sum.equals(bytes.subarray(body))) throw bad('checksum mismatch (corrupt or truncated)');
  const flags = dv.getUint16(6, true);
  if (flags & ~FLAG_STATE) throw bad(`unknown flags 0x${flags.toString(16)}`);
  const id = u32(8);
  const dc = u32(12);
  const ep = u32(16);
  const node = u32(20);
  const metaLen = u32(24);
  const stateLen = u32(28);
  const count = u32(32);
  if (u32(36) !== 0) throw bad('reserved header field is not zero');
  if (id === 0) throw bad('migration id 0');
  if (dc > MAX_DC) throw bad(`dc ${dc} out of range`);
  if (ep > MAX_EP) throw bad(`endpoint ${ep} out of range`);
  if (node > MAX_NODE) throw bad(`node ${node} out of range`);
  let o = IMAGE_HEADER_BYTES;
  if (metaLen > MAX_META || metaLen > body - o) throw bad(`metadata length ${metaLen} exceeds the image`);
  let meta: unknown;
  try {
    meta = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(o, o + metaLen)));
  } catch {
    throw bad('metadata is not UTF-8 JSON');
  }
  o += metaLen;
  const { module, args, name } = (meta ?? {}) as { module?: unknown; args?: unknown; name?: unknown };
  if (typeof module !== 'string' || !module || module.length > MAX_MODULE_PATH || module.includes('\0')) throw bad('metadata: module must be a path');
  if (!Array.isArray(args) || args.length > MAX_ARGS || !args.every((a) => typeof a === 'string')) throw bad('metadata: args must be an array of strings');
  if (!isName(name)) throw bad('metadata: name must be a string of at most 31 bytes');
  if (!(flags & FLAG_STATE) && stateLen !== 0) throw bad('state bytes without the state flag');
  if (stateLen > body - o) throw bad(`state length ${stateLen} exceeds the image`);
  const state = flags & FLAG_STATE ? bytes.subarray(o, o + stateLen) : null;
  o += stateLen;
  if (count > Math.floor((body - o) / IMAGE_MESSAGE_HEADER_BYTES)) throw bad(`${count} messages cannot fit in the image`);
  const messages: ImageMessage[] = [];
  for (let i = 0; i < count; i++) {
    if (body - o < IMAGE_MESSAGE_HEADER_BYTES) throw bad(`message ${i} truncated`);
    const word = u32(o);
    const kind = CODE_KIND.get(word & 0xff);
    if (!kind) throw bad(`message ${i}: unknown kind ${word & 0xff}`);
    if (word >>> 8) throw bad(`message ${i}: reserved bytes are not zero`);
    const src = u32(o + 4);
    const srcNode = u32(o + 8);
    const srcGen = u32(o + 12);
    const callId = u32(o + 16);
    const bits = u32(o + 20);
    const plen = u32(o + 24);
    o += IMAGE_MESSAGE_HEADER_BYTES;
    if (src > MAX_EP) throw bad(`message ${i}: source endpoint ${src} out of range`);
    if (srcNode > MAX_NODE) throw bad(`message ${i}: source node ${srcNode} out of range`);
    if (plen > MAX_PAYLOAD) throw bad(`message ${i}: payload of ${plen} bytes exceeds 1 MiB`);
    if (plen > body - o) throw bad(`message ${i}: payload length ${plen} exceeds the image`);
    if (kind === 'notify' && plen !== 0) throw bad(`message ${i}: a notification with a payload`);
    messages.push({ kind, src, srcNode, srcGen, callId, bits, payload: bytes.subarray(o, o + plen) });
    o += plen;
  }
  if (o !== body) throw bad(`${body - o} unexpected bytes after the last message`);
  return { id, dc, ep, node, module, args: args as string[], name, state, messages };
}

/**
 * The image's calls from callers on `node`, as engine.expectReplies() takes
 * them: [dc, callerEp, callerGen, callId, ep] per call (the source's agent:
 * their replies will come from the destination).
 */
export function imageExpectedReplies(img: ServiceImage, node: number): Uint32Array {
  const rows = img.messages.filter((m) => m.kind === 'call' && m.srcNode === node);
  const out = new Uint32Array(rows.length * 5);
  rows.forEach((m, i) => out.set([img.dc, m.src, m.srcGen, m.callId, img.ep], i * 5));
  return out;
}
