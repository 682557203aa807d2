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
   * What the row measures where that is not obvious from the name (e.g. how
   * an unreliable transport is paced); the udp suite prints these under its tables.
   */
  readonly notes?: readonly string[];
  /**
   * Ping-pong `size`-byte messages with an echoing peer. The implementation
   * warms up first (see `timeRoundTrips` in `rtt.ts`), then returns exactly
   * `iters` round-trip samples in microseconds, each taken with
   * `process.hrtime.bigint()` around one send + matching full-size reply.
   * Transports over a lossy medium return an `RttResult` with their loss count.
   */
  rtt(size: number, iters: number): Promise<number[] | RttResult>;
  /**
   * Stream `size`-byte messages one way to a receiving peer, respecting the
   * transport's back-pressure so memory stays bounded: first for
   * `opts.warmupSeconds` (not measured), then for `opts.seconds`. The
   * receiver counts the measured messages and bytes itself and reports them;
   * the implementation must check that every byte sent arrived (`checkSink`).
   * `streamMeasured` (sender) and `Sink` (receiver) implement this protocol.
   * Absent when the transport has no throughput row (its cells stay empty).
   */
  throughput?(size: number, opts: ThroughputOptions): Promise<ThroughputResult>;
}

export interface RttResult {
  /** Exactly `iters` round-trip samples in microseconds, as for a plain array. */
  readonly samples: number[];
  /** Datagrams lost during the trial, as the transport counts them (see `ThroughputResult.lost`). */
  readonly lost?: number;
  /** Retransmissions during the trial, as the transport counts them (see `ThroughputResult.retransmits`). */
  readonly retransmits?: number;
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
  /**
   * Only transports over UDP: datagrams lost in the trial as the transport
   * counts them (dvs: dropped on the wire, injected drops included, and
   * recovered by retransmission; raw datagram baselines: never delivered).
   * The dvs cluster rows (`transports/dvs-udp.ts`) report messages sent and
   * acknowledged that the receiver never got, by its sequence check: always 0
   * for a reliable transport; their wire drops show in `retransmits`.
   */
  readonly lost?: number;
  /** Only reliable transports over UDP (dvs): datagrams retransmitted in the trial (the agents' transport counters). */
  readonly retransmits?: number;
}
