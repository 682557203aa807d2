import { abortError } from './abort.js';

/**
 * A cumulative acknowledgement count a sender can wait on, for flow control.
 * Aborting `signal` fails it, so no wait outlives its trial.
 */
export class AckCounter {
  private acked = 0;
  private waiting: { target: number; resolve: () => void; reject: (err: Error) => void } | undefined;
  private error: Error | undefined;

  constructor(signal: AbortSignal) {
    signal.addEventListener('abort', () => this.fail(abortError(signal)), { once: true });
  }

  /** Records that `total` messages (cumulative) have been acknowledged. */
  ack(total: number): void {
    this.acked = Math.max(this.acked, total);
    const waiting = this.waiting;
    if (waiting !== undefined && this.acked >= waiting.target) {
      this.waiting = undefined;
      waiting.resolve();
    }
  }

  fail(err: Error): void {
    this.error ??= err;
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.reject(this.error);
  }

  /** `true` when `target` messages are already acknowledged, else a promise for that moment. */
  until(target: number): true | Promise<void> {
    if (this.error !== undefined) return Promise.reject(this.error);
    if (this.acked >= target) return true;
    return new Promise<void>((resolve, reject) => {
      this.waiting = { target, resolve, reject };
    });
  }
}
