/**
 * Renders a local-suite JSON result (`npm run bench -- local --json FILE`) as
 * the Markdown table the README shows: `node dist/bench/markdown.js FILE`.
 */
import { readFileSync } from 'node:fs';

interface Row {
  transport: string;
  size: number;
  rtt_p50_us?: number;
  rtt_p99_us?: number;
  msgs_per_s?: number;
  gbytes_per_s?: number;
}
interface Result {
  host: { cpus: number; model: string; kernel: string; node: string };
  quick: boolean;
  results: Row[];
}

const file = process.argv[2];
if (file === undefined) {
  process.stderr.write('usage: markdown.js <local-suite.json>\n');
  process.exit(2);
}
const data = JSON.parse(readFileSync(file, 'utf8')) as Result;
const cell = (t: string, size: number, key: keyof Row, digits: number, scale = 1): string => {
  const r = data.results.find((x) => x.transport === t && x.size === size);
  const v = r?.[key];
  return typeof v === 'number' ? (v / scale).toFixed(digits) : '–';
};
const transports = [...new Set(data.results.map((r) => r.transport))];
const lines = [
  `| transport | RTT p50 64 B (µs) | RTT p99 64 B | RTT p50 4 KiB | RTT p50 1 MiB | msgs/s 64 B | msgs/s 4 KiB | GB/s 64 KiB | GB/s 1 MiB |`,
  `|---|---:|---:|---:|---:|---:|---:|---:|---:|`,
  ...transports.map(
    (t) =>
      `| ${t} | ${cell(t, 64, 'rtt_p50_us', 2)} | ${cell(t, 64, 'rtt_p99_us', 1)} | ${cell(t, 4096, 'rtt_p50_us', 2)} | ${cell(t, 1 << 20, 'rtt_p50_us', 0)} | ${cell(t, 64, 'msgs_per_s', 2, 1e6)}M | ${cell(t, 4096, 'msgs_per_s', 2, 1e6)}M | ${cell(t, 65536, 'gbytes_per_s', 1)} | ${cell(t, 1 << 20, 'gbytes_per_s', 1)} |`,
  ),
];
const h = data.host;
process.stdout.write(`${lines.join('\n')}\n\nMeasured with \`npm run bench -- local${data.quick ? ' --quick' : ''}\` on ${h.cpus} × ${h.model}, Linux ${h.kernel}, Node ${h.node}.\n`);
