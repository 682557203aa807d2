import { formatGBps, formatRate, formatSize, formatUs } from './stats.js';
import type { MetricRow } from './suite.js';
import { renderTable } from './table.js';

interface Metric {
  readonly title: string;
  readonly value: (row: MetricRow) => number | null;
  readonly format: (value: number) => string;
  /** Shown only when some row has a value (e.g. `lost`, which only UDP transports report). */
  readonly optional?: boolean;
}

const METRICS: readonly Metric[] = [
  { title: 'RTT p50 (µs)', value: (r) => r.rtt_p50_us, format: formatUs },
  { title: 'RTT p99 (µs)', value: (r) => r.rtt_p99_us, format: formatUs },
  { title: 'One-way throughput (msgs/s)', value: (r) => r.msgs_per_s, format: formatRate },
  { title: 'One-way throughput (GB/s)', value: (r) => r.gbytes_per_s, format: formatGBps },
  { title: 'Datagrams lost (RTT + throughput trials)', value: (r) => r.lost ?? null, format: String, optional: true },
  { title: 'Retransmits (RTT + throughput trials)', value: (r) => r.retransmits ?? null, format: String, optional: true },
];

/** One table per metric (rows = transports, columns = sizes), then any errors. */
export function renderMetricTables(rows: readonly MetricRow[]): string {
  const transports = [...new Set(rows.map((r) => r.transport))];
  const sizes = [...new Set(rows.map((r) => r.size))];
  const header = ['transport', ...sizes.map(formatSize)];
  const shown = METRICS.filter((metric) => metric.optional !== true || rows.some((r) => metric.value(r) !== null));
  const tables = shown.map((metric) => {
    const body = transports.map((transport) => [
      transport,
      ...sizes.map((size) => {
        const row = rows.find((r) => r.transport === transport && r.size === size);
        const value = row === undefined ? null : metric.value(row);
        return value === null ? (row?.error === undefined ? '-' : 'ERR') : metric.format(value);
      }),
    ]);
    return renderTable(metric.title, header, body);
  });
  const errors = rows.filter((r) => r.error !== undefined).map((r) => `  ${r.transport} @ ${formatSize(r.size)}: ${r.error}`);
  if (errors.length > 0) tables.push(['Errors:', ...errors].join('\n') + '\n');
  return tables.join('\n');
}
