// embedded.ts — embedded membership: the agents themselves keep the member
// table, with no extra service.
//
// Join: a new agent sends JOIN {node, address, incarnation} to a seed over a
// short TCP connection to the seed's transport address (same ip and port
// number as its UDP transport: the transport drops datagrams from addresses it
// does not know, so the first contact cannot be a CONTROL frame) and receives
// the seed's member table. From then on everything travels as CONTROL frames
// ({k:'mem'}) on the reliable transport: every agent sends its full table to a
// peer when the link comes up and to every peer whenever its table changes, so
// each agent learns every member and adds it as a transport peer (full mesh).
//
// Failure detection is local: each agent watches its own link to each member
// (transport PeerDown after deadAfterMs of silence → 'suspect'; still down
// suspectMs later → 'dead', and its endpoints leave the directory). Suspect and
// dead are never taken from another agent's table; only existence, address,
// incarnation and 'left' are. A higher incarnation replaces an entry (a
// restarted node rejoins); LEAVE marks a member 'left' at once.
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { Logger } from '../agent/log.js';
import { TypedEmitter, type Member, type Membership, type MembershipEvents, type View } from './membership.js';

export interface SeedAddress {
  node: number;
  host: string;
  port: number;
}

/** What embedded membership needs from its agent. */
export interface EmbeddedHost {
  /** Adds (or re-addresses) a transport peer; idempotent. */
  addPeer(node: number, host: string, port: number): void;
  /** Removes a transport peer (its proxies go). */
  removePeer(node: number): void;
  /** The member is dead: its endpoints leave the directory (the transport peer is kept, so it can come back). */
  forget(node: number): void;
  /** A CONTROL message to a peer's agent. */
  send(node: number, msg: object): void;
  log: Logger;
}

export interface EmbeddedOptions {
  node: number;
  host: string;
  port: number;
  incarnation: number;
  seeds: SeedAddress[];
  /** The transport's deadAfterMs (a learned member whose link never comes up is suspected after it). */
  deadAfterMs: number;
  suspectMs: number;
  /** Between rounds of join attempts (ms, default 250). */
  joinRetryMs?: number;
}

const MAX_MEMBERS = 1024;

function parseMembers(x: unknown): Member[] | null {
  if (!Array.isArray(x) || x.length > MAX_MEMBERS) return null;
  const out: Member[] = [];
  for (const m of x as Record<string, unknown>[]) {
    if (typeof m !== 'object' || m === null) return null;
    const { node, address, incarnation, state } = m;
    if (!Number.isInteger(node) || (node as number) < 0 || (node as number) > 1023) return null;
    if (typeof address !== 'string' || !/^[0-9.]+:\d{1,5}$/.test(address)) return null;
    if (!Number.isSafeInteger(incarnation) || (incarnation as number) <= 0) return null;
    if (state !== 'alive' && state !== 'suspect' && state !== 'dead' && state !== 'left') return null;
    out.push({ node: node as number, address, incarnation: incarnation as number, state });
  }
  return out;
}

function splitAddress(a: string): { host: string; port: number } {
  const i = a.lastIndexOf(':');
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
}

export class EmbeddedMembership extends TypedEmitter<MembershipEvents> implements Membership {
  private readonly self: Member;
  private readonly members = new Map<number, Member>();
  private readonly up = new Set<number>();
  private readonly timers = new Map<number, NodeJS.Timeout>();
  private number = 1;
  private server: Server | null = null;
  private stopped = false;
  private joined = false;

  constructor(
    private readonly o: EmbeddedOptions,
    private readonly host: EmbeddedHost,
  ) {
    super();
    this.self = { node: o.node, address: `${o.host}:${o.port}`, incarnation: o.incarnation, state: 'alive' };
  }

  async start(): Promise<void> {
    const srv = createServer((sock) => this.serveJoin(sock));
    await new Promise<void>((resolve) => {
      srv.once('error', (e) => {
        // Joins must then go through another seed; the node still joins and serves.
        this.host.log('warn', 'membership: cannot listen for joins', { address: this.self.address, error: (e as Error).message });
        resolve();
      });
      srv.listen(this.o.port, this.o.host, () => {
        this.server = srv;
        resolve();
      });
    });
    this.server?.unref();
    this.host.log('info', 'view', { view: this.number, members: this.summary() });
    void this.joinLoop();
  }

  view(): View {
    const members = [this.self, ...this.members.values()].map((m) => ({ ...m })).sort((a, b) => a.node - b.node);
    return { number: this.number, members };
  }

  /** Has this node joined a cluster (or formed one)? */
  isJoined(): boolean {
    return this.joined;
  }

  async leave(): Promise<void> {
    if (this.stopped) return;
    const msg = { k: 'mem', t: 'leave', node: this.self.node, incarnation: this.self.incarnation };
    const targets = [...this.up];
    for (const n of targets) this.host.send(n, msg);
    this.stop();
    this.host.log('info', 'left the cluster', { told: targets });
    // Let the transport deliver it before the engine closes.
    if (targets.length) await new Promise((r) => setTimeout(r, 100));
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.server?.close();
    this.server = null;
  }

  /** The transport link to `node` is up (`address` from the agent's peer table, for a static peer). */
  peerUp(node: number, incarnation: number, address: string): void {
    if (this.stopped) return;
    this.up.add(node);
    this.clearTimer(node);
    let changed = false;
    const cur = this.members.get(node);
    if (!cur) {
      this.members.set(node, { node, address, incarnation, state: 'alive' });
      changed = true;
    } else if (incarnation > cur.incarnation || (incarnation === cur.incarnation && cur.state !== 'alive' && cur.state !== 'left')) {
      if (incarnation > cur.incarnation && cur.state === 'left') this.host.addPeer(node, splitAddress(cur.address).host, splitAddress(cur.address).port);
      Object.assign(cur, { incarnation, state: 'alive' });
      changed = true;
    }
    this.sendTable(node);
    if (changed) this.changed();
  }

  peerDown(node: number): void {
    if (this.stopped) return;
    this.up.delete(node);
    const cur = this.members.get(node);
    if (cur?.state === 'alive') this.suspect(cur);
  }

  /** A {k:'mem'} CONTROL message from a peer's agent. */
  receive(from: number, msg: unknown): void {
    if (this.stopped) return;
    const m = msg as { t?: unknown; members?: unknown; node?: unknown; incarnation?: unknown };
    if (m.t === 'table') {
      const members = parseMembers(m.members);
      if (!members) {
        this.host.log('warn', 'malformed member table ignored', { peer: from });
        return;
      }
      if (this.merge(members)) this.changed();
    } else if (m.t === 'leave') {
      const cur = this.members.get(from);
      if (cur && m.node === from && m.incarnation === cur.incarnation && cur.state !== 'left') {
        this.markLeft(cur);
        this.changed();
      }
    } else {
      this.host.log('warn', 'unknown membership message ignored', { peer: from, t: String(m.t) });
    }
  }

  private summary(): string[] {
    return this.view().members.map((m) => `${m.node}:${m.state}`);
  }

  private changed(): void {
    this.number++;
    const v = this.view();
    this.host.log('info', 'view', { view: v.number, members: v.members.map((m) => `${m.node}:${m.state}`) });
    for (const n of this.up) this.sendTable(n);
    this.emit('view', v);
  }

  private table(): Member[] {
    return this.view().members;
  }

  private sendTable(node: number): void {
    this.host.send(node, { k: 'mem', t: 'table', members: this.table() });
  }

  /** Folds a member table (from a peer or a seed) into ours; true if ours changed. */
  private merge(remote: Member[]): boolean {
    let changed = false;
    for (const m of remote) {
      if (m.node === this.self.node) continue;
      const cur = this.members.get(m.node);
      if (!cur) {
        if (m.state === 'left' || m.state === 'dead') continue;  // never knew it; nothing to do
        this.members.set(m.node, { ...m, state: 'alive' });
        this.learned(m);
        changed = true;
      } else if (m.incarnation > cur.incarnation) {
        if (m.state === 'left') {
          cur.incarnation = m.incarnation;
          if (cur.state !== 'left') this.markLeft(cur);
        } else {
          const wasLeft = cur.state === 'left';
          Object.assign(cur, { address: m.address, incarnation: m.incarnation, state: 'alive' });
          this.clearTimer(cur.node);
          if (wasLeft || !this.up.has(cur.node)) this.learned(cur);
          else this.host.addPeer(cur.node, splitAddress(cur.address).host, splitAddress(cur.address).port);
        }
        changed = true;
      } else if (m.incarnation === cur.incarnation && m.state === 'left' && cur.state !== 'left') {
        this.markLeft(cur);
        changed = true;
      }
    }
    return changed;
  }

  /** A member we have no link to yet: add it as a transport peer; suspect it if the link does not come up. */
  private learned(m: Member): void {
    const a = splitAddress(m.address);
    this.host.addPeer(m.node, a.host, a.port);
    this.arm(m.node, this.o.deadAfterMs, () => {
      const cur = this.members.get(m.node);
      if (cur?.state === 'alive' && !this.up.has(m.node)) this.suspect(cur);
    });
  }

  private suspect(m: Member): void {
    m.state = 'suspect';
    this.changed();
    this.arm(m.node, this.o.suspectMs, () => {
      if (m.state !== 'suspect' || this.up.has(m.node)) return;
      m.state = 'dead';
      this.host.forget(m.node);
      this.changed();
    });
  }

  private markLeft(m: Member): void {
    m.state = 'left';
    this.clearTimer(m.node);
    this.up.delete(m.node);
    this.host.removePeer(m.node);
  }

  private arm(node: number, ms: number, f: () => void): void {
    this.clearTimer(node);
    const t = setTimeout(() => {
      this.timers.delete(node);
      if (!this.stopped) f();
    }, ms);
    t.unref();
    this.timers.set(node, t);
  }

  private clearTimer(node: number): void {
    const t = this.timers.get(node);
    if (t) clearTimeout(t);
    this.timers.delete(node);
  }

  // ---- join over TCP ----

  private serveJoin(sock: Socket): void {
    sock.setTimeout(2000, () => sock.destroy());
    sock.on('error', () => sock.destroy());
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 4096) return void sock.destroy();
      const i = buf.indexOf('\n');
      if (i < 0) return;
      let reply: object;
      try {
        const req = JSON.parse(buf.slice(0, i)) as { k?: unknown; t?: unknown; node?: unknown; address?: unknown; incarnation?: unknown };
        const joiner = req.k === 'mem' && req.t === 'join' ? parseMembers([{ node: req.node, address: req.address, incarnation: req.incarnation, state: 'alive' }]) : null;
        if (!joiner || this.stopped) throw new Error('not a join');
        const j = joiner[0];
        if (j.node === this.self.node) throw new Error(`node ${j.node} is this node`);
        this.host.log('info', 'join request', { peer: j.node, address: j.address, incarnation: j.incarnation });
        if (this.merge([j])) this.changed();
        reply = { k: 'mem', t: 'table', members: this.table() };
      } catch (e) {
        reply = { k: 'mem', t: 'refused', reason: (e as Error).message };
      }
      sock.end(JSON.stringify(reply) + '\n');
    });
  }

  private joinVia(seed: SeedAddress): Promise<Member[]> {
    return new Promise((resolve, reject) => {
      const sock = connect({ host: seed.host, port: seed.port });
      let buf = '';
      const fail = (e: Error): void => {
        sock.destroy();
        reject(e);
      };
      sock.setTimeout(1000, () => fail(new Error('timed out')));
      sock.on('error', fail);
      sock.setEncoding('utf8');
      sock.on('connect', () => {
        sock.write(JSON.stringify({ k: 'mem', t: 'join', node: this.self.node, address: this.self.address, incarnation: this.self.incarnation }) + '\n');
      });
      sock.on('data', (chunk: string) => {
        buf += chunk;
        const i = buf.indexOf('\n');
        if (i < 0) return;
        sock.destroy();
        try {
          const r = JSON.parse(buf.slice(0, i)) as { t?: unknown; members?: unknown; reason?: unknown };
          const members = r.t === 'table' ? parseMembers(r.members) : null;
          if (!members) throw new Error(`refused: ${String(r.reason ?? 'bad answer')}`);
          resolve(members);
        } catch (e) {
          reject(e as Error);
        }
      });
      sock.on('end', () => fail(new Error('closed without an answer')));
    });
  }

  private async joinLoop(): Promise<void> {
    const seeds = this.o.seeds.filter((s) => s.node !== this.self.node);
    if (!seeds.length) {
      this.joined = true;
      this.host.log('info', 'formed a new cluster', {});
      return;
    }
    let warned = false;
    while (!this.stopped && !this.joined) {
      for (const s of seeds) {
        try {
          const members = await this.joinVia(s);
          if (this.stopped) return;
          this.joined = true;
          this.host.log('info', 'joined the cluster', { via: s.node, members: members.length });
          if (this.merge(members)) this.changed();
          return;
        } catch (e) {
          if (!warned) this.host.log('info', 'join attempt failed, retrying', { seed: s.node, error: (e as Error).message });
        }
      }
      warned = true;
      await new Promise((r) => setTimeout(r, this.o.joinRetryMs ?? 250).unref());
    }
  }
}
