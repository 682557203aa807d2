// serve-helpers.ts — shared by the serve-*.test.ts files (not a test itself):
// `dvs serve` children with their JSON event lines, JSON calls, clients that
// keep a service busy with sequenced one-way messages and calls, and a
// stand-in for the agents' side of the runtime protocol (the test plays the
// orchestrator: it intercepts the runtime's requests in embedded agents and
// pushes the migration steps itself).
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Agent, Endpoint } from '../lib/index.js';
import type { ControlConnection, ControlRequest } from '../lib/agent/control.js';
import { spawnCli } from './cluster-helpers.js';
import { sleep, within, type Child, type T } from './helpers.js';

export interface ServeEventLine {
  event: string;
  [k: string]: unknown;
}

/** A `dvs serve` child started with --json: its next event lines, and cleanup of its image files. */
export class ServeProc {
  readonly child: Child;
  constructor(t: T, args: string[]) {
    this.child = spawnCli(t, `serve ${args[0]}`, ['serve', ...args, '--json']);
    const pid = this.child.pid;
    t.teardown(() => removeImages(pid));
  }

  get pid(): number {
    return this.child.pid;
  }

  /** The next event line (other stdout lines, e.g. a module's own, are skipped). */
  async event(ms = 20000): Promise<ServeEventLine> {
    const deadline = Date.now() + ms;
    for (;;) {
      const l = await this.child.line(Math.max(1, deadline - Date.now()));
      try {
        const v = JSON.parse(l) as ServeEventLine;
        if (v && typeof v.event === 'string') return v;
      } catch {
        /* not an event */
      }
    }
  }

  /** Reads stdout lines until a module's own JSON line {"fixture": what} (event lines in between are skipped). */
  async fixture(what: string, ms = 20000): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      const l = await this.child.line(Math.max(1, deadline - Date.now()));
      try {
        if ((JSON.parse(l) as { fixture?: unknown }).fixture === what) return;
      } catch {
        /* not JSON */
      }
    }
  }

  /** Reads event lines until one named `name`; returns it. */
  async until(name: string, ms = 20000): Promise<ServeEventLine> {
    const deadline = Date.now() + ms;
    for (;;) {
      const e = await this.event(Math.max(1, deadline - Date.now()));
      if (e.event === name) return e;
    }
  }
}

const IMAGE_DIR = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();

/** Image files a runtime of that pid left (a SIGKILLed one cannot remove its own). */
export function imagesOf(pid: number): string[] {
  return readdirSync(IMAGE_DIR).filter((f) => f.startsWith(`dvs-image-${pid}-`));
}

function removeImages(pid: number): void {
  for (const f of imagesOf(pid)) rmSync(join(IMAGE_DIR, f), { force: true });
}

/** A JSON call; resolves with the parsed reply. */
export async function callJson<R = Record<string, unknown>>(ep: Endpoint, dst: number, req: unknown, timeoutMs = 20000): Promise<R> {
  const m = await ep.call(dst, JSON.stringify(req), { timeoutMs });
  try {
    return JSON.parse(m.text()) as R;
  } finally {
    m.release();
  }
}

/**
 * A client of examples/kv.js: round after round, `burst` one-way puts of
 * consecutive seqs under its own key, sent without waiting for each other
 * (they queue up in the service's mailbox), then a call get of that key
 * carrying the next seq — the answer must be the last put's seq (the puts
 * went first: per-sender order, across a migration too). Errors are
 * collected, never thrown.
 */
export class KvClient {
  /** One-way messages sent (their seqs are 0..sent-1 in call/send order). */
  sent = 0;
  calls = 0;
  private seq = 0;
  readonly errors: string[] = [];
  private running = true;
  private readonly done: Promise<void>;

  constructor(
    readonly ep: Endpoint,
    readonly server: number,
    readonly key: string,
    readonly burst = 8,
  ) {
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const first = this.seq;
      try {
        const puts: Promise<void>[] = [];
        for (let k = 0; k < this.burst; k++) {
          const seq = this.seq++;
          puts.push(this.ep.send(this.server, JSON.stringify({ op: 'put', key: this.key, value: seq, seq }), { timeoutMs: 30000 }));
        }
        await Promise.all(puts);
        this.sent += this.burst;
        const r = await callJson<{ found: boolean; value: unknown }>(this.ep, this.server, { op: 'get', key: this.key, seq: this.calls }, 30000);
        this.calls++;
        if (r.value !== this.seq - 1) this.errors.push(`${this.key}: get after puts ${first}..${this.seq - 1} answered ${JSON.stringify(r)}`);
      } catch (e) {
        this.errors.push(`${this.key} round from ${first}: ${(e as Error).message}`);
        this.running = false;  // the seqs are no longer consecutive: stop, the test fails on the error
      }
    }
  }

  /** Resolves once `n` more rounds have completed (bounded). */
  async rounds(n: number, ms = 30000): Promise<void> {
    const want = this.calls + n;
    const deadline = Date.now() + ms;
    while (this.calls < want) {
      if (Date.now() > deadline) throw new Error(`${this.key}: ${n} rounds not done within ${ms} ms (errors: ${this.errors.slice(0, 3).join('; ')})`);
      await sleep(5);
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await within(this.done, 40000, `client ${this.key} to stop`);
  }
}

interface Track {
  count: number;
  last: number | null;
  dup: number;
  gap: number;
}

/** Checks examples/kv.js's per-sender record for a KvClient: every message once, in order. */
export async function checkKv(t: T, probe: Endpoint, server: number, clients: { node: number; c: KvClient }[]): Promise<void> {
  const st = await callJson<{ senders: Record<string, { calls: Track; sends: Track }> }>(probe, server, { op: 'stats' });
  for (const { node, c } of clients) {
    const s = st.senders[`${node}:${c.ep.ep}`];
    t.same(
      s && { sends: [s.sends.count, s.sends.last, s.sends.dup, s.sends.gap], calls: [s.calls.count, s.calls.last, s.calls.dup, s.calls.gap] },
      { sends: [c.sent, c.sent - 1, 0, 0], calls: [c.calls, c.calls - 1, 0, 0] },
      `${c.key}: ${c.sent} one-way messages and ${c.calls} calls, each handled once, in order (count, last seq, dup, gap)`,
    );
    t.same(c.errors, [], `${c.key}: no error, every get saw its put`);
  }
}

/** The requests `dvs serve` sends its agent. */
const RUNTIME_OPS = new Set(['service', 'mig-image', 'mig-failed', 'mig-standby', 'mig-restored', 'mig-serving']);

export interface RuntimeRequest {
  node: number;
  op: string;
  req: ControlRequest & Record<string, unknown>;
  conn: ControlConnection;
}

/**
 * The agents' half of the runtime protocol, played by the test: embedded
 * agents answer the runtime's requests {ok: true} and queue them here
 * (`next`); the test pushes the steps (`push`).
 */
export class RuntimeRequests {
  private readonly queue: RuntimeRequest[] = [];
  private waiters: { match(r: RuntimeRequest): boolean; resolve(r: RuntimeRequest): void }[] = [];

  constructor(agents: Agent[]) {
    for (const a of agents) {
      const x = a as unknown as { handle(req: ControlRequest, conn: ControlConnection): unknown };
      const orig = x.handle.bind(a);
      x.handle = (req, conn) => {
        if (!RUNTIME_OPS.has(req.op)) return orig(req, conn);
        const r: RuntimeRequest = { node: a.node, op: req.op, req: req as RuntimeRequest['req'], conn };
        const w = this.waiters.find((w) => w.match(r));
        if (w) {
          this.waiters = this.waiters.filter((x) => x !== w);
          w.resolve(r);
        } else this.queue.push(r);
        return { ok: true };
      };
    }
  }

  /** The next request `op` (optionally from node / matching `pred`), bounded. */
  next(op: string, node?: number, pred: (r: RuntimeRequest) => boolean = () => true, ms = 20000): Promise<RuntimeRequest> {
    const match = (r: RuntimeRequest): boolean => r.op === op && (node === undefined || r.node === node) && pred(r);
    const i = this.queue.findIndex(match);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0]);
    let w!: { match(r: RuntimeRequest): boolean; resolve(r: RuntimeRequest): void };
    const p = new Promise<RuntimeRequest>((resolve) => this.waiters.push((w = { match, resolve })));
    return within(p, ms, `the runtime's '${op}' request${node === undefined ? '' : ` on node ${node}`}`).finally(() => {
      this.waiters = this.waiters.filter((x) => x !== w);
    });
  }

  /** Requests seen and not taken by next(). */
  pending(op?: string): RuntimeRequest[] {
    return this.queue.filter((r) => op === undefined || r.op === op);
  }

  push(conn: ControlConnection, msg: Record<string, unknown>): void {
    if (!conn.push) throw new Error('no push on this connection');
    conn.push(msg);
  }
}
