/**
 * The `udp` suite: two agents on this machine over UDP on 127.0.0.1. RTT at
 * 64 B and 1400 B (one datagram, under a typical MTU), one-way throughput at
 * 64 B, 1400 B and 1 MiB; the dvs rows (see `transports/dvs-udp.ts`:
 * `dvs-udp` with separate agent processes, `dvs-udp-embedded` and
 * `dvs-udp-spin` with agents embedded in invoker mode, and the 5 %-loss
 * variants `dvs-udp-loss5` and `dvs-udp-embedded-loss5`) against node:dgram,
 * sockperf and zeromq over TCP.
 * Rows of UDP transports carry `lost` (datagrams, see `ThroughputResult.lost`).
 */
import { measure, selectTransports, summary, type Plan } from '../measure.js';
import { renderMetricTables } from '../metric-tables.js';
import { computeRatios, renderRatioTables } from '../ratios.js';
import { formatSize } from '../stats.js';
import type { MetricRow, Suite, SuiteOptions } from '../suite.js';
import type { Transport } from '../transport.js';
import { dvsUdpTransports } from '../transports/dvs-udp.js';
import { nodeDgram } from '../transports/node-dgram.js';
import { locateSockperf, sockperf } from '../transports/sockperf.js';
import { zeromqTcp } from '../transports/zeromq.js';

const RTT_SIZES: readonly number[] = [64, 1400];
const THROUGHPUT_SIZES: readonly number[] = [64, 1400, 1 << 20];

const QUICK: Plan = {
  rttIters: () => 2000,
  throughput: { warmupSeconds: 0.2, seconds: 0.5 },
};

const FULL: Plan = {
  rttIters: () => 20_000,
  throughput: { warmupSeconds: 0.5, seconds: 2 },
};

/** The suite's transports in table order: dvs rows first, then the baselines. */
export function udpTransports(): Transport[] {
  return [...dvsUdpTransports(), nodeDgram, sockperf, zeromqTcp];
}

/** Runs `transports` (the suite passes `udpTransports()`; tests or callers may pass others). */
export async function runUdp(transports: readonly Transport[], opts: SuiteOptions, log: (line: string) => void) {
  const chosen = selectTransports(transports, opts.only);
  if (chosen.some((t) => t.name === sockperf.name)) await locateSockperf(log);
  // --sizes measures both metrics at the given sizes.
  const sizes = opts.sizes ?? [...new Set([...RTT_SIZES, ...THROUGHPUT_SIZES])].sort((a, b) => a - b);
  const plan = opts.quick ? QUICK : FULL;
  const results: MetricRow[] = [];
  for (const transport of chosen) {
    for (const size of sizes) {
      const wanted = {
        rtt: opts.sizes !== undefined || RTT_SIZES.includes(size),
        throughput: opts.sizes !== undefined || THROUGHPUT_SIZES.includes(size),
      };
      if (!wanted.rtt && transport.throughput === undefined) continue; // e.g. sockperf @ 1 MiB: nothing to measure
      const row = await measure(transport, size, plan, wanted);
      log(`${transport.name} @ ${formatSize(size)}: ${summary(row)}`);
      results.push(row);
    }
  }
  const ratios = computeRatios(results);
  const notes = chosen.flatMap((t) => t.notes ?? []);
  const ratioText = renderRatioTables(ratios);
  const text = [
    renderMetricTables(results),
    ratioText === '' ? 'Ratios: no dvs rows in this run.\n' : ratioText,
    notes.length > 0 ? ['What the rows measure:', ...notes.map((n) => `  ${n}`)].join('\n') + '\n' : '',
  ];
  return { json: { results, ratios }, text: text.filter((part) => part !== '').join('\n') };
}

export const udpSuite: Suite = {
  name: 'udp',
  run: (opts, log) => runUdp(udpTransports(), opts, log),
};
