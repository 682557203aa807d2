// session.ts — one agent's connection to etcd, shared by its membership,
// directory and DC table (the "parts", each owning a key prefix under
// /dvs/<namespace>/).
//
// A session round: keep the lease if etcd still has it (else grant a new one,
// TTL 2 s by default) and keep it alive (a keepalive every TTL/3); let the
// parts register (membership: this node's key); read every key under the
// prefix (a snapshot at revision R) and hand each part its keys; let the parts
// write what this node owns (directory: its endpoints; DC table: the
// configured DCs); then watch the prefix from R+1, so that no change is missed
// between the snapshot and the watch. Any failure (etcd unreachable, the watch
// or keepalive stream broken, the lease expired) ends the round: the error is
// logged (EDVSNOTCONN, with etcd's address), and a new round starts after an
// exponential back-off (100 ms doubling up to half the TTL, so that a
// restarted etcd sees the keepalives again before the leases it renewed
// expire). A round talks to one etcd member (calls and both streams); the
// next round after a failure tries the next member of the list. The parts
// keep what they knew meanwhile: the data plane goes on with the last known
// directory; the next snapshot corrects it.
//
// Every etcd call has a deadline; every stream has an error listener; nothing
// here throws into the event loop or leaves a rejection unhandled.
import { CompareResult, CompareTarget, Etcd3, type IKeyValue, type IWatchResponse, type Watcher } from 'etcd3';
import type { Logger } from '../../agent/log.js';
import { DvsError } from '../../errors.js';
import { TypedEmitter } from '../../membership/membership.js';
import { DEFAULT_TTL_S } from './url.js';

export interface EtcdSessionOptions {
  /** etcd members' client addresses, 'host:port'. */
  endpoints: string[];
  /** The dvs namespace: keys live under /dvs/<namespace>/. */
  namespace: string;
  /** Lease TTL (s, default 2). */
  ttlSeconds?: number;
  /** Back-off between rounds: first delay and cap (ms; defaults 100 and TTL/2, at most 5000). */
  retryMinMs?: number;
  retryMaxMs?: number;
  /** Deadline of every unary etcd call, and of the watch's creation (ms, default 2000). */
  callTimeoutMs?: number;
}

/** A key under a part's prefix (`key` without the prefix). */
export interface Kv {
  key: string;
  value: string;
  mod: number;
  lease: string;
}

export interface KvChange {
  type: 'put' | 'delete';
  key: string;
  kv: Kv;
}

/** A user of the session: owns the keys under /dvs/<ns>/<prefix>. */
export interface SessionPart {
  /** 'nodes/', 'eps/', 'dcs/'. */
  readonly prefix: string;
  /** Before the snapshot, with the lease granted: write what must be there first (this node's key). */
  register?(): Promise<void>;
  /** Every key of the part at one revision (after each (re)connection). */
  snapshot(kvs: Kv[]): void;
  /** Later changes, in order. */
  changes(ch: KvChange[]): void;
  /** After the snapshot: write what this node owns. A throw ends the round (and it is retried). */
  sync?(): Promise<void>;
  /** Operations for a graceful leave (one transaction with the others'; the lease is revoked after). */
  leaveOps?(): LeaveOp[];
}

export type LeaveOp = { put: string; value: string; tombstone: true } | { delete: string };

type SessionEvents = { up: []; down: [string] };
type State = 'idle' | 'connecting' | 'up' | 'down' | 'stopped';

/** etcd's range end for "every key with this prefix". */
function prefixEnd(p: string): Buffer {
  const b = Buffer.from(p);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] < 0xff) {
      b[i]++;
      return b.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

export function errText(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  // grpc's messages end with a long resolution note; the first line says it.
  return m.split('\n')[0].replace(/\s*Resolution note:.*$/, '').trim();
}

/** A stored value parsed as a JSON object (values come from etcd: anything may be there); null otherwise. */
export function parseObject(s: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(s);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** A tombstone (the key of a node that left) stays this long. */
export const TOMBSTONE_TTL_S = 60;

/** Passes calls straight through: the session does its own retries and back-off. */
const passThrough = { execute: async <T>(fn: () => T | Promise<T>): Promise<T> => fn() };

export class EtcdSession extends TypedEmitter<SessionEvents> {
  /** '/dvs/<namespace>/' */
  readonly base: string;
  /** 'etcd://h:p,...' for messages. */
  readonly display: string;
  readonly ttl: number;
  private readonly retryMin: number;
  private readonly retryMax: number;
  private readonly callTimeout: number;
  private readonly parts: SessionPart[] = [];
  /** The client of the round (one etcd member); one client per member, made on first use. */
  private c: Etcd3 | null = null;
  private readonly clients = new Map<string, Etcd3>();
  /** Which member the next round talks to: the same while it works, the next one after a failure. */
  private pick = 0;
  private member = '';
  private leaseId: string | null = null;
  private st: State = 'idle';
  private started: Promise<void> | null = null;
  private firstDone: () => void = () => {};
  /** Round number: callbacks from an earlier round's streams are ignored. */
  private round = 0;
  private breakRound: ((why: string) => void) | null = null;
  private watcher: Watcher | null = null;
  private keep: { timer: NodeJS.Timeout; end(): void } | null = null;
  private wake: (() => void) | null = null;

  constructor(
    private readonly o: EtcdSessionOptions,
    private readonly log: Logger,
  ) {
    super();
    this.base = `/dvs/${o.namespace}/`;
    this.display = `etcd://${o.endpoints.join(',')}`;
    this.ttl = o.ttlSeconds ?? DEFAULT_TTL_S;
    this.retryMin = o.retryMinMs ?? 100;
    this.retryMax = Math.max(this.retryMin, o.retryMaxMs ?? Math.min(5000, (this.ttl * 1000) / 2));
    this.callTimeout = o.callTimeoutMs ?? 2000;
  }

  /** Parts get snapshots and changes in the order they were added. */
  add(part: SessionPart): void {
    this.parts.push(part);
  }

  get state(): State {
    return this.st;
  }

  /** The current lease ('' when none). */
  get lease(): string {
    return this.leaseId ?? '';
  }

  /** Absolute key. */
  key(rel: string): string {
    return this.base + rel;
  }

  /** Starts the rounds; resolves after the first round connected or failed (its error logged). Idempotent. */
  start(): Promise<void> {
    if (!this.started) {
      this.started = new Promise<void>((resolve) => (this.firstDone = resolve));
      void this.loop();
    }
    return this.started;
  }

  /** The client, while a round may write (connecting or up); EDVSNOTCONN otherwise. */
  client(): Etcd3 {
    if (!this.c || this.st === 'stopped' || this.st === 'down' || this.st === 'idle') throw this.notConnected('not connected');
    return this.c;
  }

  /** The client if the session is up (for operations on behalf of a caller: fail fast while etcd is away). */
  clientUp(): Etcd3 {
    if (!this.c || this.st !== 'up') throw this.notConnected(this.st === 'stopped' ? 'the agent is stopping' : 'not connected (retrying)');
    return this.c;
  }

  notConnected(why: unknown): DvsError {
    if (why instanceof DvsError) return why;
    return new DvsError('EDVSNOTCONN', `etcd ${this.display} unreachable: ${errText(why)}`);
  }

  /** Ends the current round (a part found something wrong, e.g. a write failed); a new round resyncs. */
  fail(why: string, round = this.round): void {
    if (round !== this.round) return;
    const b = this.breakRound;
    this.breakRound = null;
    b?.(why);
  }

  /** The round that a caller's callbacks belong to (pass to fail()). */
  get currentRound(): number {
    return this.round;
  }

  /**
   * Graceful leave: one transaction with the parts' leave operations (this
   * node's endpoint keys deleted, its node key replaced by a tombstone on a
   * lease of its own), then the lease is revoked; then stop. Without etcd: just stop.
   */
  async leave(): Promise<boolean> {
    let told = false;
    if (this.st === 'up' && this.c && this.leaseId) {
      const c = this.c;
      const lease = this.leaseId;
      let timer: NodeJS.Timeout | undefined;
      try {
        const tell = async (): Promise<void> => {
          const ops = this.parts.flatMap((p) => p.leaveOps?.() ?? []);
          const tomb = ops.some((o) => 'put' in o) ? (await c.leaseClient.leaseGrant({ TTL: TOMBSTONE_TTL_S, ID: 0 })).ID : '0';
          await c.kv.txn({
            compare: [],
            success: ops.map((o) =>
              'put' in o ? { request_put: { key: Buffer.from(this.key(o.put)), value: Buffer.from(o.value), lease: tomb } } : { request_delete_range: { key: Buffer.from(this.key(o.delete)) } },
            ),
          });
          await c.leaseClient.leaseRevoke({ ID: lease });
        };
        // Bounded as a whole: a stopping agent does not wait long for an etcd that stopped answering.
        const deadline = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no answer within ${this.callTimeout} ms`)), this.callTimeout);
        });
        await Promise.race([tell(), deadline]);
        this.leaseId = null;
        told = true;
      } catch (e) {
        this.log('warn', 'could not tell etcd about the leave: the others will see this node dead when its lease expires', { etcd: this.display, error: errText(e) });
      } finally {
        clearTimeout(timer);
      }
    }
    this.stop();
    return told;
  }

  /** Stops without telling etcd (the lease expires). */
  stop(): void {
    if (this.st === 'stopped') return;
    this.st = 'stopped';
    this.fail('stopped');
    this.teardown();
    this.wake?.();
    this.firstDone();
    this.c = null;
    const all = [...this.clients.values()];
    this.clients.clear();
    // After the current turn: calls in flight reject (and are caught where they were made).
    setImmediate(() => {
      for (const c of all) {
        try {
          c.close();
        } catch {
          /* already closed */
        }
      }
    });
  }

  /** This part-relative key's current value (null: absent). */
  async get(rel: string, c: Etcd3 = this.client()): Promise<Kv | null> {
    const r = await c.kv.range({ key: Buffer.from(this.key(rel)) });
    const kv = r.kvs[0];
    return kv ? { key: rel, value: kv.value.toString(), mod: Number(kv.mod_revision), lease: String(kv.lease ?? '0') } : null;
  }

  /**
   * A compare-and-swap on one key: if its mod revision is `expect` (or it is
   * absent, for 'absent': create-if-absent), put `value` (on the session's
   * lease when `onLease`) or delete it. Returns whether it happened, the
   * revision (on success: the key's new mod revision), and otherwise the key's
   * current value (null: absent).
   */
  async cas(rel: string, expect: number | 'absent', op: { value: string; onLease: boolean } | 'delete', c: Etcd3 = this.client()): Promise<{ ok: boolean; rev: number; cur: Kv | null }> {
    const key = Buffer.from(this.key(rel));
    const r = await c.kv.txn({
      compare: [expect === 'absent' ? { key, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 } : { key, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: expect }],
      success: [op === 'delete' ? { request_delete_range: { key } } : { request_put: { key, value: Buffer.from(op.value), lease: op.onLease ? this.lease || '0' : '0' } }],
      failure: [{ request_range: { key } }],
    });
    const rev = Number(r.header.revision);
    if (r.succeeded) return { ok: true, rev, cur: null };
    const kv = r.responses[0]?.response_range?.kvs?.[0];
    return { ok: false, rev, cur: kv ? { key: rel, value: kv.value.toString(), mod: Number(kv.mod_revision), lease: String(kv.lease ?? '0') } : null };
  }

  /**
   * A client for one member. A round uses one member for its calls and both
   * its streams (with several hosts in one client, etcd3 would put each stream
   * on a random one, and a dead member would break every other round).
   */
  private clientFor(endpoint: string): Etcd3 {
    let c = this.clients.get(endpoint);
    if (c) return c;
    c = new Etcd3({
      hosts: `http://${endpoint}`,
      // One attempt per call (the session retries with back-off, on the next
      // member); cockatiel's default circuit breaker would hold a restarted
      // etcd off for 5 s.
      faultHandling: { host: () => passThrough as never, global: passThrough as never },
      grpcOptions: {
        'grpc.initial_reconnect_backoff_ms': this.retryMin,
        'grpc.max_reconnect_backoff_ms': this.retryMax,
        'grpc.keepalive_time_ms': 10000,
        'grpc.keepalive_timeout_ms': 5000,
      },
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + this.callTimeout }),
    });
    this.clients.set(endpoint, c);
    return c;
  }

  private async loop(): Promise<void> {
    let delay = this.retryMin;
    let attempt = 0;
    let downSince = 0;
    while (this.st !== 'stopped') {
      const broken = new Promise<string>((r) => (this.breakRound = r));
      const round = this.round;
      try {
        this.st = 'connecting';
        await this.establish(round);
        if (this.round !== round) throw new Error('connection lost while connecting');
        this.st = 'up';
        if (downSince) this.log('info', 'etcd reachable again: registered and resynchronised', { etcd: this.display, member: this.member, downMs: Date.now() - downSince, lease: this.leaseId });
        else this.log('info', 'etcd connected', { etcd: this.display, member: this.member, lease: this.leaseId, ttlS: this.ttl });
        attempt = 0;
        delay = this.retryMin;
        downSince = 0;
        this.firstDone();
        this.emit('up');
        const why = await broken;
        if ((this.st as State) === 'stopped') break;
        downSince = Date.now();
        this.st = 'down';
        this.teardown();
        this.pick++;
        this.log('error', `EDVSNOTCONN: etcd ${this.display}: ${why}; the data plane keeps the last known directory; reconnecting`, { code: 'EDVSNOTCONN', etcd: this.display, member: this.member, error: why });
        this.emit('down', why);
      } catch (e) {
        if ((this.st as State) === 'stopped') break;
        const first = this.st !== 'down';
        this.st = 'down';
        this.teardown();
        this.pick++;
        attempt++;
        if (!downSince) downSince = Date.now();
        const why = errText(e);
        // Every failure of the first few, then sparser (attempts 8, 16, 32...).
        const level = attempt <= 4 || (attempt & (attempt - 1)) === 0 ? 'error' : 'debug';
        if (e instanceof DvsError && e.code !== 'EDVSNOTCONN')
          this.log(level, `cannot register in etcd ${this.display}: ${why}; retrying in ${delay} ms`, { code: e.code, etcd: this.display, member: this.member, error: why, attempt, retryMs: delay });
        else this.log(level, `EDVSNOTCONN: etcd ${this.display} unreachable (${why}); retrying in ${delay} ms`, { code: 'EDVSNOTCONN', etcd: this.display, member: this.member, error: why, attempt, retryMs: delay });
        this.firstDone();
        if (first) this.emit('down', why);
        await this.sleep(delay);
        delay = Math.min(delay * 2, this.retryMax);
        continue;
      }
      await this.sleep(this.retryMin);
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.st === 'stopped') return Promise.resolve();
    return new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms * (0.8 + 0.4 * Math.random()));
      this.wake = () => {
        clearTimeout(t);
        this.wake = null;
        resolve();
      };
    });
  }

  /** Ends the round's streams; their late callbacks are ignored (the round number moves on). */
  private teardown(): void {
    this.round++;
    const w = this.watcher;
    this.watcher = null;
    if (w) void w.cancel().catch(() => {});
    const k = this.keep;
    this.keep = null;
    if (k) {
      clearInterval(k.timer);
      k.end();
    }
  }

  private async establish(round: number): Promise<void> {
    this.member = this.o.endpoints[this.pick % this.o.endpoints.length];
    const c = (this.c = this.clientFor(this.member));
    // The lease: the old one if etcd still has it (an etcd restart renews leases), else a new one.
    if (this.leaseId) {
      const r = await c.leaseClient.leaseTimeToLive({ ID: this.leaseId, keys: false });
      if (Number(r.TTL) <= 0) {
        this.log('warn', 'the lease expired while etcd was unreachable: registering again with a new one', { etcd: this.display, lease: this.leaseId });
        this.leaseId = null;
      }
    }
    if (!this.leaseId) this.leaseId = (await c.leaseClient.leaseGrant({ TTL: this.ttl, ID: 0 })).ID;
    await this.keepAlive(c, this.leaseId, round);
    for (const p of this.parts) await p.register?.();
    const r = await c.kv.range({ key: Buffer.from(this.base), range_end: prefixEnd(this.base) });
    const rev = Number(r.header.revision);
    const byPart = new Map<SessionPart, Kv[]>(this.parts.map((p) => [p, []]));
    for (const kv of r.kvs) {
      const hit = this.route(kv);
      if (hit) byPart.get(hit.part)!.push(hit.kv);
    }
    for (const p of this.parts) this.guard(() => p.snapshot(byPart.get(p)!));
    for (const p of this.parts) await p.sync?.();
    await this.watch(c, rev + 1, round);
  }

  /** The part owning an absolute key, and the key relative to its prefix. */
  private route(kv: IKeyValue): { part: SessionPart; kv: Kv } | null {
    const full = kv.key.toString();
    if (!full.startsWith(this.base)) return null;
    const rel = full.slice(this.base.length);
    const part = this.parts.find((p) => rel.startsWith(p.prefix));
    if (!part) return null;
    return { part, kv: { key: rel.slice(part.prefix.length), value: kv.value.toString(), mod: Number(kv.mod_revision), lease: String(kv.lease ?? '0') } };
  }

  private guard(f: () => void): void {
    try {
      f();
    } catch (e) {
      this.log('error', 'etcd registry: handling a change failed', { error: (e as Error).stack ?? String(e) });
    }
  }

  private async keepAlive(c: Etcd3, id: string, round: number): Promise<void> {
    const stream = await c.leaseClient.leaseKeepAlive();
    let last = Date.now();
    stream.on('error', (e: unknown) => this.fail(`lease keepalive: ${errText(e)}`, round));
    stream.on('end', () => this.fail('lease keepalive stream ended', round));
    stream.on('data', (res: { TTL: string }) => {
      if (Number(res.TTL) <= 0) {
        if (round === this.round) this.leaseId = null;
        this.fail('the lease expired', round);
      } else last = Date.now();
    });
    const send = (): void => {
      if (Date.now() - last > this.ttl * 1000) return this.fail(`no keepalive answer for ${this.ttl} s`, round);
      try {
        stream.write({ ID: id });
      } catch (e) {
        this.fail(`lease keepalive: ${errText(e)}`, round);
      }
    };
    send();
    const timer = setInterval(send, (this.ttl * 1000) / 3);
    timer.unref();
    this.keep = {
      timer,
      end: () => {
        try {
          stream.end();
        } catch {
          /* gone */
        }
      },
    };
    if (round !== this.round) this.keep.end();
  }

  private async watch(c: Etcd3, from: number, round: number): Promise<void> {
    const w = c.watch().prefix(this.base).startRevision(String(from)).watcher();
    this.watcher = w;
    let connected!: () => void;
    let failed!: (e: Error) => void;
    const ready = new Promise<void>((resolve, reject) => {
      connected = resolve;
      failed = reject;
    });
    w.on('connected', () => connected());
    w.on('error', (e: Error) => {
      failed(e);
      this.fail(`watch: ${errText(e)}`, round);
    });
    w.on('disconnected', (e: unknown) => {
      failed(e instanceof Error ? e : new Error(String(e)));
      this.fail(`watch: ${errText(e)}`, round);
    });
    w.on('end', () => this.fail('watch ended', round));
    w.on('data', (res: IWatchResponse) => {
      if (round === this.round) this.onWatch(res);
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`watch not established within ${this.callTimeout} ms`)), this.callTimeout);
      timer.unref();
    });
    try {
      await Promise.race([ready, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private onWatch(res: IWatchResponse): void {
    // Consecutive changes of one part go together, in etcd's order (one
    // transaction may touch several parts: a leave deletes endpoints, then
    // marks the node).
    let run: KvChange[] = [];
    let owner: SessionPart | null = null;
    const flush = (): void => {
      if (owner && run.length) {
        const p = owner;
        const r = run;
        this.guard(() => p.changes(r));
      }
      run = [];
    };
    for (const ev of res.events ?? []) {
      const hit = this.route(ev.kv);
      if (!hit) continue;
      if (hit.part !== owner) {
        flush();
        owner = hit.part;
      }
      run.push({ type: ev.type === 'Put' ? 'put' : 'delete', key: hit.kv.key, kv: hit.kv });
    }
    flush();
  }
}
