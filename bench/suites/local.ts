/** The `local` suite: RTT and one-way throughput between processes on one host. */
import { measure, selectTransports, summary, type Plan } from '../measure.js';
import { computeRatios } from '../ratios.js';
import { renderMetricTables } from '../metric-tables.js';
import { formatSize } from '../stats.js';
import type { MetricRow, Suite, SuiteOptions } from '../suite.js';
import { transports } from '../transports/index.js';

const SIZES: readonly number[] = [64, 4096, 65536, 1048576];

const QUICK: Plan = {
  rttIters: (size) => (size >= 1 << 20 ? 200 : size >= 1 << 16 ? 1000 : 2000),
  throughput: { warmupSeconds: 0.2, seconds: 0.5 },
};

const FULL: Plan = {
  rttIters: (size) => (size >= 1 << 20 ? 2000 : size >= 1 << 16 ? 10_000 : 20_000),
  throughput: { warmupSeconds: 0.5, seconds: 2 },
};

export const localSuite: Suite = {
  name: 'local',

  async run(opts: SuiteOptions, log) {
    const chosen = selectTransports(transports, opts.only);
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
