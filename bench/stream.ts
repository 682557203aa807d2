import { setImmediate as nextTurn } from 'node:timers/promises';
import type { ThroughputOptions } from './transport.js';

/** The hot loop yields to the event loop this often, so peer deaths and timeouts are noticed. */
const YIELD_EVERY_NS = 10_000_000n;

/**
 * Sends between clock reads: reading the clock (a BigInt per call) costs about
 * as much as a send on the fastest transports, so it is read once per batch.
 * A batch of 16 of the largest messages takes well under a millisecond.
 */
const SENDS_PER_CLOCK_READ = 16;

/** Calls `send` back to back for `seconds`; returns how many sends were made. */
async function streamFor(seconds: number, signal: AbortSignal, send: () => true | Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(seconds * 1e9));
  let nextYield = start + YIELD_EVERY_NS;
  let sent = 0;
  for (let now = start; now < deadline; now = process.hrtime.bigint()) {
    if (now >= nextYield) {
      await nextTurn();
      nextYield = now + YIELD_EVERY_NS;
    }
    signal.throwIfAborted();
    for (let i = 0; i < SENDS_PER_CLOCK_READ; i++) {
      const ready = send();
      sent++;
      if (ready !== true) await ready;
    }
  }
  signal.throwIfAborted();
  return sent;
}

/**
 * The sender side of a throughput trial (see `Sink` for the receiver):
 * stream for `opts.warmupSeconds`, send an end marker, stream for
 * `opts.seconds`, send another end marker. Returns the measured-phase count.
 *
 * `send` sends one message and returns `true` to continue at once, or a
 * promise to await first (back-pressure); the loop stays synchronous until
 * then. `sendEndMarker` sends one empty message. Throws as soon as `signal`
 * is aborted.
 */
export async function streamMeasured(
  opts: ThroughputOptions,
  signal: AbortSignal,
  send: () => true | Promise<unknown>,
  sendEndMarker: () => unknown,
): Promise<number> {
  await streamFor(opts.warmupSeconds, signal, send);
  await sendEndMarker();
  const sent = await streamFor(opts.seconds, signal, send);
  await sendEndMarker();
  return sent;
}
