/** What a benchmark suite is and what it produces. */

export interface SuiteOptions {
  readonly quick: boolean;
  /** Transport names to run (all when undefined). */
  readonly only: readonly string[] | undefined;
  /** Message sizes in bytes (the suite's defaults when undefined). */
  readonly sizes: readonly number[] | undefined;
}

export interface SuiteRun {
  /** Suite-specific fields merged into the JSON document after suite/host/quick. */
  readonly json: Readonly<Record<string, unknown>>;
  /** Human-readable tables for stdout. */
  readonly text: string;
}

export interface Suite {
  readonly name: string;
  /** Runs the suite; progress goes to `log`. Throws `UsageError` for bad options. */
  run(opts: SuiteOptions, log: (line: string) => void): Promise<SuiteRun>;
}

/** A command-line mistake: reported without a stack trace, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** One transport at one message size; `null` metrics failed (see `error`). */
export interface MetricRow {
  readonly transport: string;
  readonly size: number;
  rtt_p50_us: number | null;
  rtt_p99_us: number | null;
  msgs_per_s: number | null;
  gbytes_per_s: number | null;
  /** Datagrams lost in this row's trials (UDP transports that count them; see `ThroughputResult.lost`). */
  lost?: number;
  /** Datagrams the transport retransmitted in this row's trials (dvs cluster rows; see `ThroughputResult.retransmits`). */
  retransmits?: number;
  error?: string;
}
