/**
 * Renders a local-, udp-, membership- or migration-suite JSON result (`npm run
 * bench -- local --json FILE`, `... udp --json FILE`, `... membership --json
 * FILE`, `... migration --json FILE`) as the Markdown table the README shows:
 * `node dist/bench/markdown.js FILE`.
 */
import { readFileSync } from 'node:fs';

interface Row {
  transport: string;
  size: number;
  rtt_p50_us?: number;
  rtt_p99_us?: number;
  msgs_per_s?: number;
  gbytes_per_s?: number;
  lost?: number;
  retransmits?: number;
}
interface MembershipRow {
  backend: string;
  nodes: number;
  trials: number;
  failure_detect_ms_p50: number | null;
  failure_detect_ms_p99: number | null;
  failure_suspect_ms_p50: number | null;
  converge_ms_p50: number | null;
  converge_ms_p99: number | null;
  lookup_us_p50: number | null;
  lookup_us_p99?: number | null;
  locate_us_p50?: number | null;
  error?: string;
}
interface MigrationRow {
  backend: string;
  state_bytes: number;
  image_bytes: number | null;
  migrations: number;
  downtime_ms_p50: number | null;
  downtime_ms_p99: number | null;
  total_ms_p50: number | null;
  client_p99_ms: number | null;
  steady_p99_ms: number | null;
  lost: number | null;
  duplicated: number | null;
  reordered: number | null;
  phases_ms_p50: Record<string, number>;
  error?: string;
}
interface Result {
  suite?: string;
  host: { cpus: number; model: string; kernel: string; node: string };
  quick: boolean;
  results: Row[];
  plan?: { trials: number; bindings: number };
}

const file = process.argv[2];
if (file === undefined) {
  process.stderr.write('usage: markdown.js <local-suite.json | udp-suite.json | membership-suite.json | migration-suite.json>\n');
  process.exit(2);
}
const data = JSON.parse(readFileSync(file, 'utf8')) as Result;
const cell = (t: string, size: number, key: keyof Row, digits: number, scale = 1): string => {
  const r = data.results.find((x) => x.transport === t && x.size === size);
  const v = r?.[key];
  return typeof v === 'number' ? (v / scale).toFixed(digits) : '–';
};
const transports = [...new Set(data.results.map((r) => r.transport))];
const h = data.host;
const measuredOn = (suite: string): string =>
  `Measured with \`npm run bench -- ${suite}${data.quick ? ' --quick' : ''}\` on ${h.cpus} × ${h.model}, Linux ${h.kernel}, Node ${h.node}.\n`;

/** Sum of `key` over a transport's rows, or '–' when none reports it. */
const total = (t: string, key: 'lost' | 'retransmits'): string => {
  const values = data.results.filter((x) => x.transport === t).map((x) => x[key]).filter((v): v is number => typeof v === 'number');
  return values.length === 0 ? '–' : String(values.reduce((a, b) => a + b, 0));
};

if (data.suite === 'migration') {
  const rows = data.results as unknown as MigrationRow[];
  const v = (x: number | null | undefined): string => (x === null || x === undefined ? '–' : String(x));
  const size = (b: number): string => (b >= 1 << 20 ? `${b / (1 << 20)} MiB` : b >= 1 << 10 ? `${b / (1 << 10)} KiB` : `${b} B`);
  const phase = (r: MigrationRow): string => ['drain', 'snapshot', 'transfer', 'restore', 'resume'].map((k) => v(r.phases_ms_p50[k])).join(' / ');
  const lines = [
    `| backend | state | image (B) | migrations | downtime p50 (ms) | p99 | total p50 (ms) | client p99 during (ms) | steady p99 (ms) | lost | dup | reord | drain / snapshot / transfer / restore / resume p50 (ms) |`,
    `|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|`,
    ...rows.filter((r) => r.error === undefined).map(
      (r) =>
        `| ${r.backend} | ${size(r.state_bytes)} | ${v(r.image_bytes)} | ${r.migrations} | ${v(r.downtime_ms_p50)} | ${v(r.downtime_ms_p99)} | ` +
        `${v(r.total_ms_p50)} | ${v(r.client_p99_ms)} | ${v(r.steady_p99_ms)} | ${v(r.lost)} | ${v(r.duplicated)} | ${v(r.reordered)} | ${phase(r)} |`,
    ),
  ];
  // Rows without numbers: one note per backend and cause (every state size).
  const skipped = [...new Set(rows.filter((r) => r.error !== undefined).map((r) => `${r.backend} (every state size): ${r.error}`))];
  const notes = skipped.length > 0 ? `\nRows without numbers: ${skipped.join('; ')}.\n` : '';
  process.stdout.write(`${lines.join('\n')}\n${notes}\n${measuredOn('migration')}`);
} else if (data.suite === 'membership') {
  const rows = data.results as unknown as MembershipRow[];
  const v = (x: number | null | undefined): string => (x === null || x === undefined ? '–' : String(x));
  const lines = [
    `| backend | agents | trials | failure detect p50 (ms) | p99 | suspect p50 (ms) | binding visible p50 (ms) | p99 | lookup p50 (µs) | p99 | locate p50 (µs) |`,
    `|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|`,
    ...rows.map(
      (r) =>
        `| ${r.backend} | ${r.nodes} | ${r.trials} | ${v(r.failure_detect_ms_p50)} | ${v(r.failure_detect_ms_p99)} | ${v(r.failure_suspect_ms_p50)} | ` +
        `${v(r.converge_ms_p50)} | ${v(r.converge_ms_p99)} | ${v(r.lookup_us_p50)} | ${v(r.lookup_us_p99)} | ${v(r.locate_us_p50)} |`,
    ),
  ];
  const skipped = rows.filter((r) => r.error !== undefined).map((r) => `${r.backend} ${r.nodes} agents: ${r.error}`);
  const notes = skipped.length > 0 ? `\nRows without numbers: ${skipped.join('; ')}.\n` : '';
  process.stdout.write(`${lines.join('\n')}\n${notes}\n${measuredOn('membership')}`);
} else if (data.suite === 'udp') {
  const kilo = (t: string, size: number): string => {
    const v = cell(t, size, 'msgs_per_s', 0, 1e3);
    return v === '–' ? v : `${v}k`;
  };
  const lines = [
    `| transport | RTT p50 64 B (µs) | RTT p99 64 B | RTT p50 1400 B | RTT p99 1400 B | msgs/s 64 B | msgs/s 1400 B | MB/s 1 MiB | lost | retransmits |`,
    `|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|`,
    ...transports.map(
      (t) =>
        `| ${t} | ${cell(t, 64, 'rtt_p50_us', 1)} | ${cell(t, 64, 'rtt_p99_us', 0)} | ${cell(t, 1400, 'rtt_p50_us', 1)} | ${cell(t, 1400, 'rtt_p99_us', 0)} | ` +
        `${kilo(t, 64)} | ${kilo(t, 1400)} | ${cell(t, 1 << 20, 'gbytes_per_s', 0, 1e-3)} | ${total(t, 'lost')} | ${total(t, 'retransmits')} |`,
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n\n${measuredOn('udp')}`);
} else {
  const lines = [
    `| transport | RTT p50 64 B (µs) | RTT p99 64 B | RTT p50 4 KiB | RTT p50 1 MiB | msgs/s 64 B | msgs/s 4 KiB | GB/s 64 KiB | GB/s 1 MiB |`,
    `|---|---:|---:|---:|---:|---:|---:|---:|---:|`,
    ...transports.map(
      (t) =>
        `| ${t} | ${cell(t, 64, 'rtt_p50_us', 2)} | ${cell(t, 64, 'rtt_p99_us', 1)} | ${cell(t, 4096, 'rtt_p50_us', 2)} | ${cell(t, 1 << 20, 'rtt_p50_us', 0)} | ${cell(t, 64, 'msgs_per_s', 2, 1e6)}M | ${cell(t, 4096, 'msgs_per_s', 2, 1e6)}M | ${cell(t, 65536, 'gbytes_per_s', 1)} | ${cell(t, 1 << 20, 'gbytes_per_s', 1)} |`,
    ),
  ];
  process.stdout.write(`${lines.join('\n')}\n\n${measuredOn('local')}`);
}
