/**
 * What harness and peers agree on. Data messages are raw bytes; on the data
 * path of a throughput trial an EMPTY message is an end marker (the first
 * ends the warm-up, the second the measured stream; see `Sink`). Control
 * reports travel as plain objects over the fork IPC channel or parentPort.
 */
import type { ThroughputResult } from './transport.js';

/** `echo` answers every message with the same bytes; `sink` counts and reports. */
export type Role = 'echo' | 'sink';

export interface SinkResult {
  readonly kind: 'result';
  readonly msgs: number;
  readonly bytes: number;
  readonly seconds: number;
}

export type PeerReport =
  /** `address`: where the peer listens when it picked it itself (a UDP port, a zeromq endpoint). */
  | { readonly kind: 'ready'; readonly address?: string }
  | SinkResult
  /** Flow-control credit: the sink has received `msgs` messages so far. */
  | { readonly kind: 'ack'; readonly msgs: number };

export function parseRole(value: unknown): Role {
  if (value === 'echo' || value === 'sink') return value;
  throw new Error(`peer role must be "echo" or "sink", got ${String(value)}`);
}

export function isPeerReport(value: unknown): value is PeerReport {
  if (typeof value !== 'object' || value === null || !('kind' in value)) return false;
  return value.kind === 'ready' || value.kind === 'result' || value.kind === 'ack';
}

/** Payload bytes used by all transports (allocated once per trial, unpooled). */
export function makePayload(size: number): Buffer {
  return Buffer.alloc(size, 0xa5);
}

/**
 * Most messages a sender may have queued but not yet consumed when the
 * transport itself has no byte-based back-pressure: about 8 MiB, within 8..1000.
 */
export function inFlightLimit(size: number): number {
  return Math.min(1000, Math.max(8, Math.floor((8 << 20) / size)));
}

/** Throws unless the sink saw exactly `sent` messages of `size` bytes. */
export function checkSink(result: SinkResult, sent: number, size: number): ThroughputResult {
  if (result.msgs !== sent || result.bytes !== sent * size) {
    throw new Error(`sink got ${result.msgs} msgs / ${result.bytes} B, sender sent ${sent} msgs / ${sent * size} B`);
  }
  return { msgs: result.msgs, seconds: result.seconds };
}

/** Throws unless an echoed reply has the full `size` bytes. */
export function checkReply(reply: Uint8Array, size: number): void {
  if (reply.byteLength !== size) throw new Error(`reply has ${reply.byteLength} B, expected ${size} B`);
}
