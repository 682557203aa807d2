/** The `local` suite: RTT and one-way throughput between processes on one host. */
import { computeRatios } from '../ratios.js';
import { renderMetricTables } from '../metric-tables.js';
import { formatRate, formatSize, formatUs, median, messageRate, percentile } from '../stats.js';
import { UsageError, type MetricRow, type Suite, type SuiteOptions } from '../suite.js';
import { withTimeout } from '../timeout.js';
import type { ThroughputOptions, Transport } from '../transport.js';
import { transports } from '../transports/index.js';

const SIZES: readonly number[] = [64, 4096, 65536, 1048576];

/** Upper bound for one rtt() or throughput() call, in case a transport ignores its own timeouts. */
const CALL_TIMEOUT_MS = 60_000;

interface Plan {
  readonly rttIters: (size: number) => number;
  readonly throughput: ThroughputOptions;
}

const QUICK: Plan = {
  rttIters: (size) => (size >= 1 << 20 ? 200 : size >= 1 << 16 ? 1000 : 2000),
  throughput: { warmupSeconds: 0.2, seconds: 0.5 },
};

const FULL: Plan = {
  rttIters: (size) => (size >= 1 << 20 ? 2000 : size >= 1 << 16 ? 10_000 : 20_000),
  throughput: { warmupSeconds: 0.5, seconds: 2 },
};

function selectTransports(only: readonly string[] | undefined): Transport[] {
  if (only === undefined) return transports;
  const known = transports.map((t) => t.name);
  const unknown = only.filter((name) => !known.includes(name));
  if (unknown.length > 0) throw new UsageError(`unknown transport(s) ${unknown.join(', ')} (known: ${known.join(', ')})`);
  return transports.filter((t) => only.includes(t.name));
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

const round = (value: number, digits: number): number => Number(value.toFixed(digits));

async function measure(transport: Transport, size: number, plan: Plan): Promise<MetricRow> {
  const row: MetricRow = { transport: transport.name, size, rtt_p50_us: null, rtt_p99_us: null, msgs_per_s: null, gbytes_per_s: null };
  const errors: string[] = [];
  const what = `${transport.name} @ ${formatSize(size)}`;
  try {
    const iters = plan.rttIters(size);
    const samples = await withTimeout(transport.rtt(size, iters), CALL_TIMEOUT_MS, `${what} rtt`);
    if (samples.length !== iters) throw new Error(`got ${samples.length} RTT samples, asked for ${iters}`);
    row.rtt_p50_us = round(median(samples), 3);
    row.rtt_p99_us = round(percentile(samples, 99), 3);
  } catch (err) {
    errors.push(`rtt: ${message(err)}`);
  }
  try {
    const result = await withTimeout(transport.throughput(size, plan.throughput), CALL_TIMEOUT_MS, `${what} throughput`);
    const rate = messageRate(result.msgs, result.seconds);
    row.msgs_per_s = Math.round(rate);
    row.gbytes_per_s = round((rate * size) / 1e9, 4);
  } catch (err) {
    errors.push(`throughput: ${message(err)}`);
  }
  if (errors.length > 0) row.error = errors.join('; ');
  return row;
}

function summary(row: MetricRow): string {
  if (row.error !== undefined) return `ERROR ${row.error}`;
  return `rtt p50 ${formatUs(row.rtt_p50_us ?? NaN)} µs, ${formatRate(row.msgs_per_s ?? NaN)} msgs/s`;
}

export const localSuite: Suite = {
  name: 'local',

  async run(opts: SuiteOptions, log) {
    const chosen = selectTransports(opts.only);
    const sizes = opts.sizes ?? SIZES;
    const plan = opts.quick ? QUICK : FULL;
    const results: MetricRow[] = [];
    for (const transport of chosen) {
      for (const size of sizes) {
        const row = await measure(transport, size, plan);
        log(`${transport.name} @ ${formatSize(size)}: ${summary(row)}`);
        results.push(row);
      }
    }
    return { json: { results, ratios: computeRatios(results) }, text: renderMetricTables(results) };
  },
};
