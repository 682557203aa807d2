/** Measuring one transport at one size into a `MetricRow`: shared by the suites. */
import { formatRate, formatSize, formatUs, median, messageRate, percentile } from './stats.js';
import { UsageError, type MetricRow } from './suite.js';
import { withTimeout } from './timeout.js';
import type { ThroughputOptions, Transport } from './transport.js';

/** Upper bound for one rtt() or throughput() call, in case a transport ignores its own timeouts. */
const CALL_TIMEOUT_MS = 60_000;

export interface Plan {
  readonly rttIters: (size: number) => number;
  readonly throughput: ThroughputOptions;
}

/** Which metrics to take at a size (a suite may measure RTT at fewer sizes than throughput). */
export interface Wanted {
  readonly rtt: boolean;
  readonly throughput: boolean;
}

/** `all` narrowed to the `--only` names, in table order; unknown names are a usage error. */
export function selectTransports(all: readonly Transport[], only: readonly string[] | undefined): Transport[] {
  if (only === undefined) return [...all];
  const known = all.map((t) => t.name);
  const unknown = only.filter((name) => !known.includes(name));
  if (unknown.length > 0) throw new UsageError(`unknown transport(s) ${unknown.join(', ')} (known: ${known.join(', ')})`);
  return all.filter((t) => only.includes(t.name));
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const round = (value: number, digits: number): number => Number(value.toFixed(digits));

/**
 * Takes the wanted metrics; a failure becomes the row's `error` and leaves
 * its cells null. `lost` is the sum of what the RTT and throughput trials
 * report, and stays absent when neither reports one.
 */
export async function measure(transport: Transport, size: number, plan: Plan, wanted: Wanted = { rtt: true, throughput: true }): Promise<MetricRow> {
  const row: MetricRow = { transport: transport.name, size, rtt_p50_us: null, rtt_p99_us: null, msgs_per_s: null, gbytes_per_s: null };
  const errors: string[] = [];
  const what = `${transport.name} @ ${formatSize(size)}`;
  const addLost = (lost: number | undefined, retransmits?: number): void => {
    if (lost !== undefined) row.lost = (row.lost ?? 0) + lost;
    if (retransmits !== undefined) row.retransmits = (row.retransmits ?? 0) + retransmits;
  };
  if (wanted.rtt) {
    try {
      const iters = plan.rttIters(size);
      const result = await withTimeout(transport.rtt(size, iters), CALL_TIMEOUT_MS, `${what} rtt`);
      const samples = Array.isArray(result) ? result : result.samples;
      if (samples.length !== iters) throw new Error(`got ${samples.length} RTT samples, asked for ${iters}`);
      row.rtt_p50_us = round(median(samples), 3);
      row.rtt_p99_us = round(percentile(samples, 99), 3);
      if (!Array.isArray(result)) addLost(result.lost, result.retransmits);
    } catch (err) {
      errors.push(`rtt: ${message(err)}`);
    }
  }
  if (wanted.throughput && transport.throughput !== undefined) {
    try {
      const result = await withTimeout(transport.throughput(size, plan.throughput), CALL_TIMEOUT_MS, `${what} throughput`);
      const rate = messageRate(result.msgs, result.seconds);
      row.msgs_per_s = Math.round(rate);
      row.gbytes_per_s = round((rate * size) / 1e9, 4);
      addLost(result.lost, result.retransmits);
    } catch (err) {
      errors.push(`throughput: ${message(err)}`);
    }
  }
  if (errors.length > 0) row.error = errors.join('; ');
  return row;
}

/** One progress line for a measured row. */
export function summary(row: MetricRow): string {
  if (row.error !== undefined) return `ERROR ${row.error}`;
  const parts: string[] = [];
  if (row.rtt_p50_us !== null) parts.push(`rtt p50 ${formatUs(row.rtt_p50_us)} µs`);
  if (row.msgs_per_s !== null) parts.push(`${formatRate(row.msgs_per_s)} msgs/s`);
  if (row.lost !== undefined) parts.push(`lost ${row.lost}`);
  if (row.retransmits !== undefined) parts.push(`retransmits ${row.retransmits}`);
  return parts.length > 0 ? parts.join(', ') : 'not measured';
}
