/**
 * The contract every benchmarked transport implements (baselines and dvs-*).
 *
 * Rules for implementations:
 * - Every call starts its peer(s) fresh (child process or worker) and tears
 *   them down before it settles, on success and on error alike. The helpers
 *   in `peer.ts` (`withProcessPeer`, `withWorkerPeer`) do this and enforce
 *   start-up and trial timeouts.
 * - Failures are reported by rejecting; the suite turns a rejection into an
 *   `error` field on the row and moves on.
 */
export interface Transport {
  /** Row label; `dvs-` prefixed names are compared against all others in `ratios`. */
  readonly name: string;
  /**
   * Ping-pong `size`-byte messages with an echoing peer. The implementation
   * warms up first (see `timeRoundTrips` in `rtt.ts`), then returns exactly
   * `iters` round-trip samples in microseconds, each taken with
   * `process.hrtime.bigint()` around one send + matching full-size reply.
   */
  rtt(size: number, iters: number): Promise<number[]>;
  /**
   * Stream `size`-byte messages one way to a receiving peer, respecting the
   * transport's back-pressure so memory stays bounded: first for
   * `opts.warmupSeconds` (not measured), then for `opts.seconds`. The
   * receiver counts the measured messages and bytes itself and reports them;
   * the implementation must check that every byte sent arrived (`checkSink`).
   * `streamMeasured` (sender) and `Sink` (receiver) implement this protocol.
   */
  throughput(size: number, opts: ThroughputOptions): Promise<ThroughputResult>;
}

export interface ThroughputOptions {
  /** Unmeasured streaming first, in seconds (JIT, caches, CPU wake-up paths). */
  readonly warmupSeconds: number;
  /** Measured streaming, in seconds. */
  readonly seconds: number;
}

export interface ThroughputResult {
  /** Messages the receiver got in the measured phase (end markers excluded). */
  readonly msgs: number;
  /**
   * Receiver-side time in seconds from the first measured message to the
   * final end marker (sent right after the last message). It spans `msgs`
   * inter-arrival gaps, so the rate is `msgs / seconds` (see `messageRate`).
   */
  readonly seconds: number;
}
