import type { SinkResult } from './protocol.js';

/**
 * Receiver side of a throughput trial: counts data messages and their bytes.
 * The first end marker (empty message) ends the warm-up and resets the
 * counters; the second ends the measured stream and yields the result, timed
 * from the first measured message to the end marker (which the sender sends
 * right after the last one). The clock is read twice per trial, not per
 * message: on the fastest transports a clock read costs as much as a receive.
 */
export class Sink {
  private dataMessages = 0;
  private warmedUp = false;
  private msgs = 0;
  private bytes = 0;
  private first = 0n;
  private last = 0n;

  /** Accounts one message; returns the result when it is the final end marker. */
  receive(byteLength: number): SinkResult | undefined {
    if (byteLength === 0) {
      if (this.warmedUp) {
        this.last = process.hrtime.bigint();
        return this.result();
      }
      this.warmedUp = true;
      this.msgs = 0;
      this.bytes = 0;
      return undefined;
    }
    if (this.msgs === 0) this.first = process.hrtime.bigint();
    this.msgs++;
    this.bytes += byteLength;
    this.dataMessages++;
    return undefined;
  }

  /** Data messages received in both phases (for flow-control acks). */
  get received(): number {
    return this.dataMessages;
  }

  private result(): SinkResult {
    return { kind: 'result', msgs: this.msgs, bytes: this.bytes, seconds: Number(this.last - this.first) / 1e9 };
  }
}
