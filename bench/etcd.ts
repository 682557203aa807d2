/**
 * One real etcd server for a benchmark suite (the membership suite's etcd
 * rows): a single member on two free 127.0.0.1 TCP ports, its data in a fresh
 * temporary directory. `stop()` kills it and removes the directory; if the
 * bench process exits or is interrupted first, an exit/signal hook does the
 * same synchronously, so no etcd process or data directory outlives the run.
 *
 * The binary is $DVS_BENCH_ETCD, else `etcd` on the PATH (Debian package
 * etcd-server). When it is missing, `startEtcd` throws an Error whose message
 * is ETCD_MISSING; the suite reports that instead of numbers.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const ETCD_MISSING = 'etcd: missing (apt-get install -y etcd-server, or set DVS_BENCH_ETCD to the etcd binary)';
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;
const VERSION_TIMEOUT_MS = 10_000;
const STDERR_TAIL = 4000;
/** Start attempts on fresh ports when a port was taken between choosing it and etcd binding it. */
const START_ATTEMPTS = 3;

/** The etcd binary if `<bin> --version` runs, else null. */
export async function etcdBinary(): Promise<string | null> {
  const bin = process.env.DVS_BENCH_ETCD ?? 'etcd';
  return new Promise((resolve) => {
    execFile(bin, ['--version'], { timeout: VERSION_TIMEOUT_MS }, (err) => resolve(err ? null : bin));
  });
}

/** The first line of `etcd --version` (e.g. 'etcd Version: 3.4.23'), or undefined when etcd is missing. */
export async function etcdVersion(): Promise<string | undefined> {
  const bin = await etcdBinary();
  if (bin === null) return undefined;
  return new Promise((resolve) => {
    execFile(bin, ['--version'], { timeout: VERSION_TIMEOUT_MS }, (err, stdout) => resolve(err ? undefined : stdout.split('\n')[0].trim()));
  });
}

/** `n` TCP ports on 127.0.0.1 that were free a moment ago (held together, so distinct). */
async function freeTcpPorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const s = createServer();
      servers.push(s);
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.listen(0, '127.0.0.1', () => resolve());
      });
    }
    return servers.map((s) => (s.address() as { port: number }).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

/** Servers not yet stopped, killed synchronously by the exit/signal hooks. */
const live = new Set<BenchEtcd>();
let hooked = false;

function killAllNow(): void {
  for (const e of [...live]) e.killNow();
}

/** Ctrl-C or SIGTERM while etcd runs: clean up, then exit as the signal would (exit handlers, e.g. arena detach, run too). */
function onSignal(signal: NodeJS.Signals): void {
  killAllNow();
  unhook();
  process.exit(128 + (constants.signals[signal] ?? 0));
}

function hook(): void {
  if (hooked) return;
  hooked = true;
  process.on('exit', killAllNow);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

function unhook(): void {
  if (!hooked) return;
  hooked = false;
  process.off('exit', killAllNow);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
}

export class BenchEtcd {
  private stderr = '';
  private exited = false;
  private exitReason = '';

  private constructor(
    private readonly child: ChildProcess,
    readonly dir: string,
    readonly clientPort: number,
  ) {
    child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      this.stderr = (this.stderr + text).slice(-STDERR_TAIL);
    });
    child.on('exit', (code, signal) => {
      this.exited = true;
      this.exitReason = signal ?? `code ${code}`;
    });
  }

  /** The agents' --registry value. */
  get url(): string {
    return `etcd://127.0.0.1:${this.clientPort}`;
  }

  /** null while etcd runs, else why it is gone (with the end of its stderr). */
  get gone(): string | null {
    return this.exited ? `etcd exited (${this.exitReason}): ${lastLine(this.stderr)}` : null;
  }

  /** Starts etcd and waits until GET /health says healthy; throws ETCD_MISSING or why it did not start (nothing left behind). */
  static async start(): Promise<BenchEtcd> {
    const bin = await etcdBinary();
    if (bin === null) throw new Error(ETCD_MISSING);
    let last = '';
    for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
      const [clientPort, peerPort] = await freeTcpPorts(2);
      const dir = mkdtempSync(join(tmpdir(), 'dvs-bench-etcd-'));
      const clientUrl = `http://127.0.0.1:${clientPort}`;
      const peerUrl = `http://127.0.0.1:${peerPort}`;
      const child = spawn(
        bin,
        ['--name', 'dvs-bench', '--data-dir', join(dir, 'data'),
          '--listen-client-urls', clientUrl, '--advertise-client-urls', clientUrl,
          '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl,
          '--initial-cluster', `dvs-bench=${peerUrl}`, '--initial-cluster-state', 'new',
          '--log-level', 'warn', '--logger', 'zap'],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      const etcd = new BenchEtcd(child, dir, clientPort);
      live.add(etcd);
      hook();
      child.on('error', (err) => {
        etcd.exited = true;
        etcd.exitReason = err.message;
      });
      try {
        await etcd.waitHealthy();
        return etcd;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
        await etcd.stop();
        if (!/address already in use/.test(last)) break;
      }
    }
    throw new Error(last);
  }

  private async waitHealthy(): Promise<void> {
    const deadline = performance.now() + START_TIMEOUT_MS;
    for (;;) {
      const gone = this.gone;
      if (gone !== null) throw new Error(`${gone.replace(/^etcd exited/, 'etcd exited at start')}`);
      if (await this.healthy()) return;
      if (performance.now() > deadline) throw new Error(`etcd not healthy within ${START_TIMEOUT_MS} ms: ${lastLine(this.stderr)}`);
      await sleep(50);
    }
  }

  /** Does etcd answer GET /health with health true? */
  async healthy(): Promise<boolean> {
    try {
      const r = await fetch(`http://127.0.0.1:${this.clientPort}/health`, { signal: AbortSignal.timeout(1000) });
      const j = (await r.json()) as { health?: unknown };
      return j.health === 'true' || j.health === true;
    } catch {
      return false;
    }
  }

  /** SIGTERM (SIGKILL after 5 s), then the data directory is removed. Idempotent. */
  async stop(): Promise<void> {
    if (!this.exited && this.child.exitCode === null && this.child.signalCode === null) {
      const exited = once(this.child, 'exit');
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
    if (live.size === 0) unhook();
  }

  /** For the exit/signal hooks: SIGKILL and remove the directory, synchronously. */
  killNow(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }
}

function lastLine(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const error = [...lines].reverse().find((l) => /"level":"(error|fatal|panic)"/.test(l));
  const line = error ?? lines.at(-1) ?? '(no output)';
  try {
    const j = JSON.parse(line) as { msg?: string; error?: string };
    return [j.msg, j.error].filter(Boolean).join(': ') || line;
  } catch {
    return line;
  }
}

/** Starts etcd for the suite (see BenchEtcd.start). */
export function startEtcd(): Promise<BenchEtcd> {
  return BenchEtcd.start();
}
