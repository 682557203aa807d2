/**
 * Baseline: Debian's `sockperf` (C, blocking recvfrom on both sides, UDP on
 * 127.0.0.1): `sockperf server` as the echo peer and `sockperf ping-pong
 * --full-rtt --full-log FILE` as the client. The samples are the per-message
 * round trips from its log (with --full-rtt it logs the RTT; without it, it
 * would log latency = RTT / 2, which is doubled here), the last `iters` of its
 * valid (post-warm-up) duration; `lost` is its count of dropped messages.
 * RTT only: `sockperf throughput` reports the sender's rate with no pacing and
 * the receiver's count only as a total at exit, which is not the
 * receiver-counted, lossless rate the throughput rows compare.
 *
 * When the binary is missing and this process is root with apt-get, the first
 * call tries `apt-get install -y sockperf` once (quiet, bounded); otherwise
 * every row fails with "sockperf: missing (apt-get install sockperf)".
 */
import { execFile, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { access, constants, readFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { withTempDir } from '../tempdir.js';
import { withTimeout } from '../timeout.js';
import type { RttResult, Transport } from '../transport.js';

const MISSING = 'sockperf: missing (apt-get install sockperf)';
const INSTALL_TIMEOUT_MS = 180_000;
const SERVER_START_MS = 5_000;
/** sockperf's client warms up for 400 ms of its -t seconds; it then sends ~30k round trips per second here. */
const CLIENT_EXTRA_MS = 15_000;

let located: Promise<string | undefined> | undefined;

async function onPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

function run(file: string, args: readonly string[], timeoutMs: number): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20, env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${file} ${args.join(' ')}: ${err.message.split('\n')[0]}${stderr.trim() === '' ? '' : `: ${stderr.trim().split('\n').at(-1)}`}`));
      else resolve({ stdout, stderr });
    });
  });
}

/** Installs sockperf with apt-get when we are root and it exists (refreshing the package lists once if needed). */
async function install(log: (line: string) => void): Promise<void> {
  const aptGet = await onPath('apt-get');
  if (aptGet === undefined || process.getuid?.() !== 0) return;
  log('sockperf: not found, trying apt-get install -y sockperf');
  const args = ['install', '-y', '-q', '--no-install-recommends', 'sockperf'];
  try {
    await run(aptGet, args, INSTALL_TIMEOUT_MS);
  } catch {
    await run(aptGet, ['update', '-q'], INSTALL_TIMEOUT_MS);
    await run(aptGet, args, INSTALL_TIMEOUT_MS);
  }
}

/** The sockperf binary, installing it on first use if possible; undefined when it stays missing. */
export function locateSockperf(log: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): Promise<string | undefined> {
  located ??= (async () => {
    const found = await onPath('sockperf');
    if (found !== undefined) return found;
    try {
      await install(log);
    } catch (err) {
      log(`sockperf: apt-get install failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    const installed = await onPath('sockperf');
    if (installed === undefined) log(MISSING);
    return installed;
  })();
  return located;
}

/** A UDP port that was free a moment ago (sockperf needs its port on the command line). */
function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4');
    socket.on('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

/** Runs `fn` while a `sockperf server` listens on `port`; the server is killed afterwards. */
async function withServer<T>(binary: string, port: number, fn: () => Promise<T>): Promise<T> {
  const server = spawn(binary, ['server', '-i', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const exited = new Promise<never>((_, reject) => {
    server.on('error', reject);
    server.on('exit', (code, signal) => reject(new Error(`sockperf server exited (${signal ?? `code ${code}`}): ${output.trim().split('\n').at(-1) ?? ''}`)));
  });
  exited.catch(() => {});
  try {
    // It prints "using recvfrom() to block on socket(s)" once its socket is bound.
    const listening = new Promise<void>((resolve) => {
      const onData = (text: string): void => {
        output = (output + text).slice(-4000);
        if (/to block on socket/.test(output)) resolve();
      };
      server.stdout.setEncoding('utf8').on('data', onData);
      server.stderr.setEncoding('utf8').on('data', onData);
    });
    await withTimeout(Promise.race([listening, exited]), SERVER_START_MS, 'sockperf server start');
    return await Promise.race([fn(), exited]);
  } finally {
    if (server.exitCode === null && server.signalCode === null) {
      const gone = new Promise((resolve) => server.once('exit', resolve));
      server.kill('SIGKILL');
      await gone;
    }
  }
}

/** Round trips in µs from a --full-log CSV ("packet, txTime(sec), rxTime(sec), rtt(usec)" or "latency(usec)"). */
export function parseFullLog(csv: string): number[] {
  const lines = csv.split('\n');
  const header = lines.findIndex((line) => line.startsWith('packet,'));
  if (header < 0) throw new Error('sockperf --full-log: no "packet," header');
  const column = lines[header].split(',').at(-1)?.trim() ?? '';
  const factor = column.startsWith('rtt') ? 1 : column.startsWith('latency') ? 2 : NaN;
  if (Number.isNaN(factor)) throw new Error(`sockperf --full-log: unknown column ${column}`);
  const samples: number[] = [];
  for (const line of lines.slice(header + 1)) {
    const fields = line.split(',');
    if (fields.length !== 4) continue;
    const value = Number(fields[3]);
    if (Number.isFinite(value)) samples.push(value * factor);
  }
  return samples;
}

async function rtt(size: number, iters: number): Promise<RttResult> {
  const binary = await locateSockperf();
  if (binary === undefined) throw new Error(MISSING);
  const port = await freeUdpPort();
  // ~25k round trips per second at least on this kind of machine; 1 s spare.
  const seconds = Math.max(1, Math.ceil(iters / 25_000) + 1);
  return withTempDir((dir) =>
    withServer(binary, port, async () => {
      const log = join(dir, 'full.csv');
      const args = ['ping-pong', '-i', '127.0.0.1', '-p', String(port), '-m', String(size), '-t', String(seconds), '--full-rtt', '--full-log', log];
      const { stdout, stderr } = await run(binary, args, seconds * 1000 + CLIENT_EXTRA_MS);
      const samples = parseFullLog(await readFile(log, 'utf8'));
      if (samples.length < iters) throw new Error(`sockperf logged ${samples.length} round trips in ${seconds} s, need ${iters}`);
      const dropped = /# dropped messages = (\d+)/.exec(stdout + stderr);
      return { samples: samples.slice(-iters), lost: dropped === null ? undefined : Number(dropped[1]) };
    }),
  );
}

export const sockperf: Transport = {
  name: 'sockperf',
  notes: [
    'sockperf: Debian\'s sockperf ping-pong (C, blocking recvfrom both sides, UDP); RTT from its --full-rtt per-message log',
    '  (its default output is one-way latency = RTT / 2). RTT only: its throughput mode is unpaced and sender-counted.',
  ],
  rtt,
};
