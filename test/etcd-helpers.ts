// etcd-helpers.ts — shared by the tests that need etcd (not a test itself): a
// real single-member `etcd` (Debian etcd-server) on free 127.0.0.1 ports with
// its data in a temporary directory, which a test can stop and start again on
// the same ports and data (an etcd outage mid-test). Always cleaned up on
// teardown: the process is killed and the directory removed.
//
// Tests that need it skip when the binary is absent:
//   t.test('...', { skip: etcdMissing() }, async (t) => { const etcd = await startEtcd(t); ... })
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Child, childEnv, sleep, type T } from './helpers.js';

export const ETCD_SKIP = 'etcd not installed (apt-get install etcd-server)';

let etcdPath: string | null | undefined;

/** The etcd binary ($DVS_TEST_ETCD, else `etcd` on the PATH), or null. */
export function etcdBinary(): string | null {
  if (etcdPath !== undefined) return etcdPath;
  const want = process.env.DVS_TEST_ETCD ?? 'etcd';
  try {
    execFileSync(want, ['--version'], { stdio: 'ignore', timeout: 10000 });
    etcdPath = want;
  } catch {
    etcdPath = null;
  }
  return etcdPath;
}

/** For tap's `skip` option: false when etcd is available, else the reason. */
export function etcdMissing(): false | string {
  return etcdBinary() ? false : ETCD_SKIP;
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freeTcpPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** One etcd server for a test. */
export class EtcdServer {
  private child: Child | null = null;
  readonly dir: string;
  private constructor(
    private readonly t: T,
    readonly clientPort: number,
    readonly peerPort: number,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'dvs-etcd-'));
  }

  /** A server on fresh ports (not started). */
  static async create(t: T): Promise<EtcdServer> {
    const client = await freeTcpPort();
    let peer = await freeTcpPort();
    while (peer === client) peer = await freeTcpPort();
    const s = new EtcdServer(t, client, peer);
    t.teardown(async () => {
      await s.stop().catch(() => {});
      rmSync(s.dir, { recursive: true, force: true });
    });
    return s;
  }

  /** 'host:port' of the client API. */
  get address(): string {
    return `127.0.0.1:${this.clientPort}`;
  }

  /** The agents' --registry value. */
  get url(): string {
    return `etcd://${this.address}`;
  }

  get running(): boolean {
    return this.child !== null && !this.child.exited;
  }

  get pid(): number {
    return this.child?.pid ?? -1;
  }

  /** Starts etcd (again: same ports, same data) and waits until it answers /health (bounded). */
  async start(ms = 20000): Promise<this> {
    if (this.running) return this;
    const bin = etcdBinary();
    if (!bin) throw new Error(ETCD_SKIP);
    const peerUrl = `http://127.0.0.1:${this.peerPort}`;
    const clientUrl = `http://${this.address}`;
    const c = new Child(
      'etcd',
      [
        bin,
        '--name', 'dvs-test',
        '--data-dir', join(this.dir, 'data'),
        '--listen-client-urls', clientUrl,
        '--advertise-client-urls', clientUrl,
        '--listen-peer-urls', peerUrl,
        '--initial-advertise-peer-urls', peerUrl,
        '--initial-cluster', `dvs-test=${peerUrl}`,
        '--initial-cluster-state', 'new',
        '--log-level', 'warn',
        '--logger', 'zap',
      ],
      childEnv(),
    );
    this.child = c;
    const deadline = Date.now() + ms;
    for (;;) {
      if (c.exited) throw new Error(`etcd exited at start: ${c.stderr.trim().slice(-2000)}`);
      if (await this.healthy()) return this;
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`etcd did not become healthy within ${ms} ms: ${c.stderr.trim().slice(-2000)}`);
      }
      await sleep(50);
    }
  }

  /** Does the server answer GET /health with health true? */
  async healthy(): Promise<boolean> {
    try {
      const r = await fetch(`http://${this.address}/health`, { signal: AbortSignal.timeout(1000) });
      const j = (await r.json()) as { health?: unknown };
      return j.health === 'true' || j.health === true;
    } catch {
      return false;
    }
  }

  /** Stops etcd (SIGTERM, SIGKILL after `ms`); the data directory stays for a restart. */
  async stop(ms = 5000): Promise<void> {
    const c = this.child;
    if (!c || c.exited) return;
    c.kill('SIGTERM');
    try {
      await c.exit(ms);
    } catch {
      c.kill('SIGKILL');
      await c.exit(5000).catch(() => {});
    }
  }

  /** SIGKILL (a crash, or a host that vanished). */
  async kill(): Promise<void> {
    const c = this.child;
    if (!c || c.exited) return;
    await c.killAndWait(5000).catch(() => {});
  }

  /** etcd's stderr so far (for diagnostics). */
  get stderr(): string {
    return this.child?.stderr ?? '';
  }
}

/** Creates and starts an etcd for the test (stopped and removed on teardown); fresh ports if one was taken meanwhile. */
export async function startEtcd(t: T): Promise<EtcdServer> {
  for (let attempt = 1; ; attempt++) {
    const s = await EtcdServer.create(t);
    try {
      return await s.start();
    } catch (e) {
      if (attempt >= 3 || !/address already in use/.test(String(e))) throw e;
    }
  }
}
