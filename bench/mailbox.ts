import { abortError } from './abort.js';

/**
 * A FIFO of values pushed by event handlers and awaited one at a time.
 * Aborting `signal` fails it, so no wait outlives its trial.
 */
export class Mailbox<T> {
  private readonly queue: T[] = [];
  private waiter: { resolve: (value: T) => void; reject: (err: Error) => void } | undefined;
  private error: Error | undefined;

  constructor(signal: AbortSignal) {
    signal.addEventListener('abort', () => this.fail(abortError(signal)), { once: true });
  }

  deliver(value: T): void {
    const waiter = this.waiter;
    if (waiter === undefined) {
      this.queue.push(value);
      return;
    }
    this.waiter = undefined;
    waiter.resolve(value);
  }

  /** Rejects the pending and all future `next()` calls (first error wins). */
  fail(err: Error): void {
    this.error ??= err;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(this.error);
  }

  next(): Promise<T> {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift() as T);
    if (this.error !== undefined) return Promise.reject(this.error);
    if (this.waiter !== undefined) return Promise.reject(new Error('Mailbox.next() called while already waiting'));
    return new Promise<T>((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }
}
