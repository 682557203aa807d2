// participant.ts — what every agent does for a migration, whatever its role:
//   client node (every node of the DC but the source, the destination included)
//     START: pin the endpoint to the source, mark this node's proxy MIGRATING
//            (local senders wait), post a FENCE behind what it already holds;
//     COMMIT: repoint the proxy at the destination (pin), clear the mark;
//     ROLLBACK: clear the mark, unpin.
//   destination, besides START/COMMIT as a client node:
//     PREPARE: start the service's module as a standby process (`dvs serve
//              ... --restore -`), attached to this node, not bound;
//     image chunks, then RESTORE: write the image, have the process restore it;
//     COMMIT: engine.adopt (the proxy becomes the process's endpoint in place),
//             push mig-adopt, wait mig-serving (the image's messages answered),
//             clear the mark;
//     ROLLBACK: kill the process.
//   source (the orchestrator runs in its agent, orchestrator.ts calls these):
//     quiesce: mark the endpoint, push mig-quiesce, receive the image;
//     commit: engine.toProxy to the destination, clear the mark, mig-detached;
//     rollback: clear the mark, mig-resume.
// It also keeps the registry of `dvs serve` services of this node ({op:'service'}).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ControlConnection, ControlRequest } from '../agent/control.js';
import type { Logger } from '../agent/log.js';
import { DvsError } from '../errors.js';
import type { NativeEngine } from '../native.js';
import { isName, MAX_DC, MAX_EP, MAX_NODE } from '../validate.js';
import type { Pins } from './pins.js';
import { CHUNK_BYTES, CHUNK_HEADER, chunkHeader, decodeChunk, fromInfo, MAX_CHUNKS, MAX_IMAGE_BYTES, toInfo, type CommitMsg, type ErrorInfo, type PrepareMsg, type RestoreMsg, type StartMsg, type StepMsg } from './protocol.js';

export type MigEngine = Pick<NativeEngine, 'setMigrating' | 'fence' | 'toProxy' | 'adopt' | 'expectReplies' | 'forgetReplies' | 'endpoints'>;

/** What the migration code needs from its agent. */
export interface MigrationHost {
  node: number;
  namespace: string;
  engine: MigEngine;
  pins: Pins;
  send(node: number, msg: object): void;
  sendBytes(node: number, bytes: Buffer): void;
  peersUp(): number[];
  /** Where (dc, ep) is bound: this node's own endpoints first, then the directory (pins applied). */
  locate(dc: number, ep: number): { node: number; gen: number; pid: number; name: string } | null;
  /** The DC's nodes in the DC table; null: the DC is not defined (open to every node). */
  dcNodes(dc: number): number[] | null;
  log: Logger;
}

/** A `dvs serve` process of this node, as it registered. */
export interface ServiceRec {
  dc: number;
  ep: number;
  module: string;
  args: string[];
  name: string;
  pid: number;
  conn: ControlConnection;
}

/** What the source's runtime answered to mig-quiesce. */
export interface ImageInfo {
  file: string;
  bytes: number;
  /** How many messages the image holds (when the runtime says). */
  messages?: number;
  /** [srcNode, callerEp, callerGen, callId] per call in the image. */
  calls: number[][];
}

/** A participant's own bounds. */
const FENCE_RETRY_MS = 2000;
/** A participant that hears neither COMMIT nor ROLLBACK this long rolls back on its own (or finishes, past adopt). */
export const WATCHDOG_MS = 120_000;
const KILL_GRACE_MS = 1000;

type Role = 'client' | 'dest' | 'source';

interface Part {
  id: number;
  dc: number;
  ep: number;
  role: Role;
  src: number;
  name: string;
  /** This node's slot for (dc, ep) carries our MIGRATING mark. */
  flagged: boolean;
  // destination
  module?: string;
  args?: string[];
  child?: ChildProcess;
  childPid?: number;
  childExit?: string;
  conn?: ControlConnection;
  standby?: boolean;
  /** Destination: the image file being written as chunks arrive (fd, chunks and bytes so far). */
  image?: { fd: number | null; got: Set<number>; bytes: number };
  file?: string;
  adopted?: boolean;
  // source
  service?: ServiceRec;
  quiesced?: boolean;
  waits: Map<string, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>;
  watchdog: NodeJS.Timeout | null;
}

const keyOf = (dc: number, ep: number): number => dc * 0x1000000 + ep;
const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url));
const SHM = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();

export function imagePath(ns: string, node: number, id: number, side: 'src' | 'dst'): string {
  return join(SHM, `dvs-mig.${ns}.${node}.${id}.${side}.img`);
}

function removeFile(f: string | undefined): void {
  if (!f) return;
  try {
    unlinkSync(f);
  } catch {
    /* already gone */
  }
}

export class Participant {
  /** (dc, ep) → the migration holding it on this node. */
  readonly locks = new Map<number, number>();
  private readonly parts = new Map<number, Part>();
  /** The source's frame buffer for image chunks (allocated at the first migration, reused). */
  private frame: Buffer | null = null;
  /** Destination side: migrations that committed here (a late ROLLBACK must learn it), the last few. */
  private readonly committedHere = new Map<number, { gen: number; pid: number }>();
  /** (dc, ep) → the service registered for it. */
  readonly services = new Map<number, ServiceRec>();

  constructor(private readonly h: MigrationHost) {
    // Images a previous agent of this node left behind (killed during a migration).
    const prefix = `dvs-mig.${h.namespace}.${h.node}.`;
    try {
      for (const f of readdirSync(SHM)) if (f.startsWith(prefix)) removeFile(join(SHM, f));
    } catch {
      /* nothing to sweep */
    }
  }

  // ---------------------------------------------------------------- services

  /** Control requests from `dvs serve` processes: service, mig-*. */
  runtimeRequest(req: ControlRequest, conn: ControlConnection): unknown {
    switch (req.op) {
      case 'service': {
        const { dc, ep, module, args = [], pid, name = '' } = req as Record<string, unknown>;
        if (!Number.isInteger(dc) || (dc as number) < 0 || (dc as number) > MAX_DC || !Number.isInteger(ep) || (ep as number) < 0 || (ep as number) > MAX_EP)
          throw new DvsError('EDVSINVAL', 'service: dc and ep must be valid numbers');
        if (typeof module !== 'string' || !module.startsWith('/')) throw new DvsError('EDVSINVAL', 'service: module must be an absolute path');
        if (!Array.isArray(args) || !args.every((a) => typeof a === 'string')) throw new DvsError('EDVSINVAL', 'service: args must be strings');
        if (!Number.isInteger(pid) || (pid as number) <= 0) throw new DvsError('EDVSINVAL', 'service: pid must be a process id');
        if (!isName(name)) throw new DvsError('EDVSINVAL', 'service: bad name');
        if (!conn.push) throw new DvsError('EDVSINVAL', 'service needs a control connection');
        const bound = this.h.engine.endpoints().find((e) => !e.remote && e.dc === dc && e.ep === ep);
        if (!bound) throw new DvsError('EDVSNOTBIND', `service: endpoint ${String(ep)} of DC ${String(dc)} is not bound on node ${this.h.node}`);
        if (bound.pid !== pid) throw new DvsError('EDVSINVAL', `service: endpoint ${String(ep)} of DC ${String(dc)} belongs to pid ${bound.pid}, not ${String(pid)}`);
        const rec: ServiceRec = { dc: dc as number, ep: ep as number, module, args: args as string[], name: name as string, pid: pid as number, conn };
        this.services.set(keyOf(rec.dc, rec.ep), rec);
        (conn as { services?: ServiceRec[] }).services = [...((conn as { services?: ServiceRec[] }).services ?? []), rec];
        this.h.log('debug', 'service registered', { dc: rec.dc, ep: rec.ep, module, pid: rec.pid });
        return { node: this.h.node };
      }
      case 'mig-image': {
        const p = this.partOf(req, 'source');
        const { file, bytes, calls = [] } = req as Record<string, unknown>;
        if (typeof file !== 'string' || !file.startsWith('/') || !Number.isSafeInteger(bytes) || (bytes as number) < 0 || !Array.isArray(calls))
          throw new DvsError('EDVSINVAL', 'mig-image: needs file (absolute path), bytes and calls');
        const rows: number[][] = [];
        for (const c of calls as unknown[]) {
          // [srcNode, src, srcGen, callId] (as built), or with the dc second
          if (!Array.isArray(c) || (c.length !== 4 && c.length !== 5) || !c.every((v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff) || (c[0] as number) > MAX_NODE)
            throw new DvsError('EDVSINVAL', 'mig-image: calls must be [srcNode, src, srcGen, callId] rows');
          rows.push(c.length === 5 ? [c[0], c[2], c[3], c[4]] : (c as number[]));
        }
        const messages = (req as { messages?: unknown }).messages;
        this.trace(p.id, 'image');
        this.settle(p, 'image', { file, bytes, messages: Number.isSafeInteger(messages) ? messages : undefined, calls: rows });
        return { ok: true };
      }
      case 'mig-failed': {
        const p = this.partOf(req);
        const e = (req as { error?: ErrorInfo }).error;
        const err = e && typeof e.code === 'string' && typeof e.message === 'string' ? fromInfo(e, 'the service runtime: ') : new DvsError('EDVSINVAL', 'the service runtime failed (no reason given)');
        for (const name of [...p.waits.keys()]) this.fail(p, name, err);
        return { ok: true };
      }
      case 'mig-standby':
      case 'mig-restored': {
        // Matched by the pid of the process this agent started (a standby does not know the migration yet).
        const pid = (req as { pid?: unknown }).pid;
        const p = [...this.parts.values()].find((x) => x.role === 'dest' && x.childPid !== undefined && x.childPid === pid);
        if (!p) throw new DvsError('EDVSINVAL', `${req.op}: no migration on node ${this.h.node} started pid ${String(pid)}`);
        const mig = (req as { mig?: unknown }).mig;
        if (req.op === 'mig-restored' && mig !== undefined && mig !== p.id) throw new DvsError('EDVSINVAL', `mig-restored: migration ${String(mig)}, expected ${p.id}`);
        p.conn = conn;
        (conn as { migration?: Part }).migration = p;
        this.trace(p.id, req.op);
        this.settle(p, req.op === 'mig-standby' ? 'standby' : 'restored', { pid: p.childPid });
        return { ok: true };
      }
      case 'mig-serving': {
        const p = this.partOf(req, 'dest');
        this.trace(p.id, 'serving');
        this.settle(p, 'serving', {});
        return { ok: true };
      }
      default:
        throw new DvsError('EDVSINVAL', `unknown control request '${req.op}'`);
    }
  }

  /** A control connection closed: its services are gone; a migration's runtime died. */
  connClosed(conn: ControlConnection): void {
    for (const s of (conn as { services?: ServiceRec[] }).services ?? []) {
      const k = keyOf(s.dc, s.ep);
      if (this.services.get(k) === s) this.services.delete(k);
      for (const p of this.parts.values())
        if (p.service === s) for (const name of [...p.waits.keys()]) this.fail(p, name, new DvsError('EDVSSRCDIED', `the service process (pid ${s.pid}) went away during the migration`));
    }
    const p = (conn as { migration?: Part }).migration;
    if (p && p.conn === conn && this.parts.get(p.id) === p)
      for (const name of [...p.waits.keys()]) this.fail(p, name, new DvsError('EDVSSRCDIED', `the restored process (pid ${String(p.childPid)}) closed its connection to the agent`));
  }

  service(dc: number, ep: number): ServiceRec | null {
    return this.services.get(keyOf(dc, ep)) ?? null;
  }

  /** Migrations this node takes part in (for `migrations` / ps). */
  active(): { id: number; dc: number; ep: number; role: Role; src: number }[] {
    return [...this.parts.values()].map((p) => ({ id: p.id, dc: p.dc, ep: p.ep, role: p.role, src: p.src }));
  }

  // ---------------------------------------------------------------- steps from the orchestrator

  /** A step message: answered with {t:'re'} to `from` (through `reply`). */
  async step(m: StepMsg, from: number): Promise<Record<string, unknown>> {
    switch (m.t) {
      case 'start':
        return this.start(m, from, 'client');
      case 'prepare':
        return this.prepare(m, from);
      case 'restore':
        return this.restore(m, from);
      case 'commit':
        return this.commit(m);
      case 'rollback':
        return this.rollback(m.id);
    }
  }

  /** Image chunk (binary CONTROL frame). */
  chunk(from: number, bytes: Buffer): void {
    const c = decodeChunk(bytes);
    const p = c ? this.parts.get(c.id) : undefined;
    if (!c || !p || p.role !== 'dest' || p.src !== from || !p.image) {
      this.h.log('warn', 'migration: image chunk for no migration here ignored', { peer: from });
      return;
    }
    const im = p.image;
    if (c.index >= MAX_CHUNKS || im.got.has(c.index)) return;
    if (c.index === 0) this.trace(p.id, 'chunk 0');
    try {
      // Straight into the file at its place: no reassembly buffer.
      if (im.fd === null) im.fd = openSync((p.file = imagePath(this.h.namespace, this.h.node, p.id, 'dst')), 'w', 0o600);
      writeSync(im.fd, c.bytes, 0, c.bytes.length, c.index * CHUNK_BYTES);
      im.got.add(c.index);
      im.bytes += c.bytes.length;
    } catch (e) {
      this.h.log('warn', 'migration: cannot write the image', { id: p.id, error: (e as Error).message });
    }
  }

  /** The link to `node` went down: a migration it orchestrates is over for this node. */
  peerDown(node: number): void {
    for (const p of [...this.parts.values()]) if (p.src === node && p.role !== 'source') this.abandon(p, `the source node ${node} went down`);
  }

  /** The agent stops: undo what is not committed. */
  stopAll(): void {
    for (const p of [...this.parts.values()]) this.abandon(p, 'the agent stops');
  }

  // ---- client side

  private lock(id: number, dc: number, ep: number): void {
    const k = keyOf(dc, ep);
    const cur = this.locks.get(k);
    if (cur !== undefined && cur !== id) throw new DvsError('EDVSBUSY', `endpoint ${ep} of DC ${dc} is already migrating (migration ${cur}, seen on node ${this.h.node})`);
    this.locks.set(k, id);
  }

  private newPart(id: number, dc: number, ep: number, role: Role, src: number, name: string): Part {
    const p: Part = { id, dc, ep, role, src, name, flagged: false, waits: new Map(), watchdog: null };
    if (role !== 'source') {
      p.watchdog = setTimeout(() => this.abandon(p, `no commit or rollback within ${WATCHDOG_MS / 1000} s`), WATCHDOG_MS);
      p.watchdog.unref();
    }
    this.parts.set(id, p);
    return p;
  }

  /** START on a client node (the destination included): pin to the source, mark, fence. */
  async start(m: StartMsg | PrepareMsg, from: number, role: Role): Promise<Record<string, unknown>> {
    let p = this.parts.get(m.id);
    if (p && p.flagged) return { fenced: true };  // a repeated START
    if (!p) {
      this.lock(m.id, m.dc, m.ep);
      p = this.newPart(m.id, m.dc, m.ep, role, m.src, m.name);
    }
    void from;
    // The endpoint's location stays the source's whatever the directory says
    // meanwhile (this also creates the proxy if this node had not heard of it).
    this.h.pins.pin(m.dc, m.ep, m.src, m.gen, m.pid, m.name, true);
    if (m.t === 'prepare') return {};
    try {
      this.h.engine.setMigrating(m.dc, m.ep, true);
    } catch (e) {
      if ((e as DvsError).code === 'EDVSNOTBIND') return { fenced: false };  // no proxy here: nobody here can send to it
      throw e;
    }
    p.flagged = true;
    const deadline = Date.now() + FENCE_RETRY_MS;
    for (;;) {
      try {
        this.h.engine.fence(m.dc, m.ep, m.id);
        return { fenced: true };
      } catch (e) {
        if ((e as DvsError).code !== 'EDVSAGAIN' || Date.now() > deadline) throw e;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  // ---- destination

  private async prepare(m: PrepareMsg, from: number): Promise<Record<string, unknown>> {
    if (this.parts.has(m.id)) throw new DvsError('EDVSBUSY', `migration ${m.id} is already prepared here`);
    this.lock(m.id, m.dc, m.ep);
    const p = this.newPart(m.id, m.dc, m.ep, 'dest', m.src, m.name);
    p.module = m.module;
    p.args = m.args;
    p.image = { fd: null, got: new Set(), bytes: 0 };
    await this.start(m, from, 'dest');
    // A standby process: module loaded, attached, waiting for the image.
    try {
      this.spawnRuntime(p, '-');
      await this.wait(p, 'standby', m.timeoutMs, 'the standby service process to start');
      p.standby = true;
    } catch (e) {
      // A runtime without standby support (or a failed start): started after the transfer instead.
      this.h.log('info', 'migration: no standby process; the service starts after the transfer', { id: m.id, reason: (e as Error).message });
      this.kill(p);
      p.standby = false;
    }
    return { standby: p.standby };
  }

  /** RESTORE, then at once COMMIT here (adopt: the point of no return), with no round trip to the source between. */
  private async restore(m: RestoreMsg, from: number): Promise<Record<string, unknown>> {
    const p = this.parts.get(m.id);
    if (!p || p.role !== 'dest' || !p.image) throw new DvsError('EDVSINVAL', `migration ${m.id} is not prepared on node ${this.h.node}`);
    const t0 = performance.now();
    const im = p.image;
    p.image = undefined;
    if (im.fd !== null) closeSync(im.fd);
    if (im.got.size !== m.chunks || im.bytes !== m.bytes || !p.file)
      throw new DvsError('EDVSINVAL', `migration ${m.id}: ${im.got.size} of ${m.chunks} image chunks (${im.bytes} of ${m.bytes} bytes) arrived`);
    this.trace(p.id, 'restore step');
    const t1 = performance.now();
    if (p.standby && p.conn?.push && !p.childExit) p.conn.push({ ev: 'mig-restore', mig: p.id, id: p.id, file: p.file });
    else this.spawnRuntime(p, p.file);
    await this.wait(p, 'restored', m.timeoutMs, 'the service to restore its image');
    removeFile(p.file);
    p.file = undefined;
    const restoreMs = performance.now() - t1;
    if (from !== this.h.node) this.h.send(from, { k: 'mig', t: 'progress', id: p.id, state: 'restored' });
    const c = await this.commit({ t: 'commit', id: p.id, dest: this.h.node, gen: 0, pid: p.childPid!, timeoutMs: m.commitTimeoutMs });
    // For the source's downtime figure: from this step's arrival to the first message served, and to this answer.
    const servedAfterMs = typeof c.servingAt === 'number' ? c.servingAt - t0 : undefined;
    return { ...c, writeMs: t1 - t0, restoreMs, servedAfterMs, answeredAfterMs: performance.now() - t0 };
  }

  private spawnRuntime(p: Part, restore: string): void {
    // The image carries the module's arguments and the endpoint's name.
    const args = [CLI, 'serve', p.module!, '--dc', String(p.dc), '--ep', String(p.ep), '--node', String(this.h.node), '--namespace', this.h.namespace];
    args.push(...(restore === '-' ? ['--standby'] : ['--restore', restore]));
    const logFile = join(tmpdir(), `dvs-${this.h.namespace}-${this.h.node}-serve-${p.dc}-${p.ep}.log`);
    let fd: number | 'ignore' = 'ignore';
    try {
      fd = openSync(logFile, 'a');
    } catch {
      /* no log */
    }
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    const child = spawn(process.execPath, args, { stdio: ['ignore', fd, fd], env, detached: true });
    if (typeof fd === 'number') closeSync(fd);
    child.unref();
    p.child = child;
    p.childPid = child.pid;
    p.childExit = undefined;
    this.h.log('info', 'migration: service process started', { id: p.id, pid: child.pid, module: p.module, restore, log: logFile });
    child.on('error', (e) => {
      p.childExit = e.message;
      for (const name of [...p.waits.keys()]) this.fail(p, name, new DvsError('EDVSSRCDIED', `cannot start the service process: ${e.message}`));
    });
    child.on('exit', (code, signal) => {
      if (p.child !== child) return;
      p.childExit = signal ? `signal ${signal}` : `status ${code}`;
      for (const name of [...p.waits.keys()])
        this.fail(p, name, new DvsError('EDVSSRCDIED', `the service process on node ${this.h.node} exited (${p.childExit}; log: ${logFile})`));
    });
  }

  private kill(p: Part): void {
    const c = p.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    if (p.conn?.push) p.conn.push({ ev: 'mig-abort', mig: p.id, id: p.id });
    p.child = undefined;
    const t = setTimeout(() => {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }, KILL_GRACE_MS);
    t.unref();
    c.once('exit', () => clearTimeout(t));
  }

  // ---- commit / rollback (client and destination; the source's are below)

  private async commit(m: CommitMsg): Promise<Record<string, unknown>> {
    const done = this.committedHere.get(m.id);
    if (done) return done;  // a repeated COMMIT
    const p = this.parts.get(m.id);
    if (!p) throw new DvsError('EDVSINVAL', `no migration ${m.id} on node ${this.h.node}`);
    if (p.role === 'dest') {
      if (!p.childPid || p.childExit) throw new DvsError('EDVSSRCDIED', `migration ${m.id}: the restored process is gone (${p.childExit ?? 'never started'})`);
      const t0 = performance.now();
      this.trace(p.id, 'adopt');
      this.h.engine.adopt(p.dc, p.ep, p.childPid, p.name || undefined);  // the point of no return (the name moves too)
      p.adopted = true;
      this.h.pins.pin(p.dc, p.ep, this.h.node, 0, p.childPid, p.name, true);
      this.trace(p.id, 'adopted');
      p.conn?.push?.({ ev: 'mig-adopt', mig: p.id, id: p.id });
      let serving = true;
      try {
        await this.wait(p, 'serving', m.timeoutMs, 'the restored service to answer the image\'s messages');
      } catch (e) {
        serving = false;
        this.h.log('warn', 'migration: the restored service did not confirm; committing anyway (the endpoint is its own now)', { id: p.id, error: (e as Error).message });
      }
      const tServing = performance.now();
      const r = this.destCommitted(p);
      return { ...r, serving, servingAt: tServing, adoptToServingMs: tServing - t0 };
    }
    // A client node: the proxy points at the destination from now on.
    this.h.pins.pin(p.dc, p.ep, m.dest, m.gen, m.pid, p.name, true);
    this.unflag(p);
    this.h.pins.release(p.dc, p.ep);
    this.finish(p);
    this.remember(p.id, { gen: m.gen, pid: m.pid });
    return {};
  }

  /** The destination after adopt: clear the mark, become the service. */
  private destCommitted(p: Part): Record<string, unknown> {
    this.unflag(p);
    const e = this.h.engine.endpoints().find((x) => !x.remote && x.dc === p.dc && x.ep === p.ep);
    if (p.conn?.push && p.childPid) {
      const rec: ServiceRec = { dc: p.dc, ep: p.ep, module: p.module!, args: p.args!, name: p.name, pid: p.childPid, conn: p.conn };
      this.services.set(keyOf(p.dc, p.ep), rec);
      (p.conn as { services?: ServiceRec[] }).services = [...((p.conn as { services?: ServiceRec[] }).services ?? []), rec];
    }
    if (p.conn) (p.conn as { migration?: Part }).migration = undefined;
    this.h.pins.release(p.dc, p.ep);
    p.child = undefined;  // a service of this node now, not a migration's process
    this.finish(p);
    const r = { gen: e?.gen ?? 0, pid: p.childPid ?? 0 };
    this.remember(p.id, r);
    return r;
  }

  private rollback(id: number): Record<string, unknown> {
    const done = this.committedHere.get(id);
    if (done) return { committed: true, ...done };  // too late: the orchestrator goes forward
    const p = this.parts.get(id);
    if (!p) return { known: false };
    if (p.role === 'dest' && p.adopted) return { committed: true, ...this.destCommitted(p) };
    this.undo(p);
    return { rolledBack: true };
  }

  private undo(p: Part): void {
    if (p.role === 'dest') {
      this.kill(p);
      if (p.image?.fd != null) closeSync(p.image.fd);
      p.image = undefined;
      removeFile(p.file);
    }
    this.unflag(p);
    this.h.pins.unpin(p.dc, p.ep);
    for (const name of [...p.waits.keys()]) this.fail(p, name, new DvsError('EDVSINVAL', 'rolled back'));
    this.finish(p);
  }

  /** No word from the orchestrator: roll back what is not committed, finish what is. */
  private abandon(p: Part, why: string): void {
    if (this.parts.get(p.id) !== p) return;
    this.h.log('warn', 'migration: giving up on its orchestrator', { id: p.id, dc: p.dc, ep: p.ep, role: p.role, why });
    if (p.role === 'dest' && p.adopted) {
      this.destCommitted(p);
      return;
    }
    if (p.role === 'source') {
      this.sourceRollback(p.id);
      return;
    }
    this.undo(p);
  }

  private unflag(p: Part): void {
    if (!p.flagged) return;
    p.flagged = false;
    try {
      this.h.engine.setMigrating(p.dc, p.ep, false);
    } catch (e) {
      this.h.log('debug', 'migration: clearing the mark', { id: p.id, error: (e as Error).message });
    }
  }

  /** Debug timeline of a migration (absolute ms, comparable across the agents of one host). */
  trace(id: number, what: string): void {
    this.h.log('debug', 'migration step', { id, what, at: Math.round((performance.timeOrigin + performance.now()) * 1000) / 1000 });
  }

  private remember(id: number, r: { gen: number; pid: number }): void {
    this.committedHere.set(id, r);
    if (this.committedHere.size > 256) this.committedHere.delete(this.committedHere.keys().next().value as number);
  }

  private finish(p: Part): void {
    if (p.watchdog) clearTimeout(p.watchdog);
    this.parts.delete(p.id);
    const k = keyOf(p.dc, p.ep);
    if (this.locks.get(k) === p.id) this.locks.delete(k);
  }

  // ---------------------------------------------------------------- the source (called by the orchestrator)

  /** Locks (dc, ep) for a migration run by this node (EDVSBUSY if one runs). */
  sourceBegin(id: number, dc: number, ep: number, svc: ServiceRec): void {
    this.lock(id, dc, ep);
    const p = this.newPart(id, dc, ep, 'source', this.h.node, svc.name);
    p.service = svc;
  }

  /** Mark the endpoint here, push mig-quiesce, wait for the image (the runtime's own timeout, plus a margin). */
  async sourceQuiesce(id: number, fences: number[], timeoutMs: number): Promise<ImageInfo> {
    const p = this.mustPart(id, 'source');
    // The same process may have registered again since the migration began (a restored runtime
    // registers once it serves): the latest record of that pid is the one to drive.
    const cur = this.services.get(keyOf(p.dc, p.ep));
    if (!cur || cur.pid !== p.service!.pid || !cur.conn.push) throw new DvsError('EDVSSRCDIED', `the service process (pid ${p.service!.pid}) is gone`);
    p.service = cur;
    const push = cur.conn.push;
    const svc = cur;
    this.h.pins.pin(p.dc, p.ep, this.h.node, 0, svc.pid, p.name, true);
    this.h.engine.setMigrating(p.dc, p.ep, true);
    p.flagged = true;
    p.quiesced = true;
    this.trace(id, 'quiesce');
    push({ ev: 'mig-quiesce', mig: id, id, fences, timeoutMs });
    const r = (await this.wait(p, 'image', timeoutMs + 2000, 'the service to quiesce and write its image')) as ImageInfo;
    p.file = r.file;
    return r;
  }

  /**
   * Sends the image file to `dest` in binary CONTROL frames, read straight
   * into one frame buffer reused for every chunk (the engine copies each
   * frame when it is handed over); removes the file. Returns [bytes, chunks].
   */
  sourceSend(id: number, dest: number): [number, number] {
    const p = this.mustPart(id, 'source');
    const fd = openSync(p.file!, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size > MAX_IMAGE_BYTES) throw new DvsError('EDVS2BIG', `the image is ${size} bytes; at most ${MAX_IMAGE_BYTES} migrate`);
      const chunks = Math.max(1, Math.ceil(size / CHUNK_BYTES));
      this.frame ??= Buffer.allocUnsafe(CHUNK_HEADER + CHUNK_BYTES);
      for (let i = 0; i < chunks; i++) {
        const len = Math.min(CHUNK_BYTES, size - i * CHUNK_BYTES);
        chunkHeader(this.frame, id, i);
        if (readSync(fd, this.frame, CHUNK_HEADER, len, i * CHUNK_BYTES) !== len) throw new DvsError('EDVSINVAL', 'the image file is shorter than it was');
        this.h.sendBytes(dest, this.frame.subarray(0, CHUNK_HEADER + len));
      }
      return [size, chunks];
    } finally {
      closeSync(fd);
      removeFile(p.file);
      p.file = undefined;
    }
  }

  /** COMMIT at the source: the endpoint becomes a proxy to the destination in place. */
  sourceCommit(id: number, dest: number, gen: number, pid: number): void {
    const p = this.mustPart(id, 'source');
    this.h.pins.pin(p.dc, p.ep, dest, gen, pid, p.name, true);
    try {
      this.h.engine.toProxy(p.dc, p.ep, dest, gen);
    } catch (e) {
      this.h.log('warn', 'migration: toProxy at the source failed (messages still arriving here are refused)', { id, error: toInfo(e).message });
    }
    this.unflag(p);
    const svc = p.service!;
    if (this.services.get(keyOf(p.dc, p.ep)) === svc) this.services.delete(keyOf(p.dc, p.ep));
    svc.conn.push?.({ ev: 'mig-detached', mig: id, id });
    this.h.pins.release(p.dc, p.ep);
    this.finish(p);
  }

  /** ROLLBACK at the source: the service goes on here (drained messages first). */
  sourceRollback(id: number): void {
    const p = this.parts.get(id);
    if (!p || p.role !== 'source') return;
    for (const name of [...p.waits.keys()]) this.fail(p, name, new DvsError('EDVSINVAL', 'rolled back'));
    this.unflag(p);
    if (p.quiesced) p.service?.conn.push?.({ ev: 'mig-resume', mig: id, id });
    removeFile(p.file);
    this.h.pins.unpin(p.dc, p.ep);
    this.finish(p);
  }

  // ---------------------------------------------------------------- waits

  private partOf(req: ControlRequest, role?: Role): Part {
    const id = (req as { mig?: unknown }).mig;
    const p = Number.isInteger(id) ? this.parts.get(id as number) : undefined;
    if (!p || (role && p.role !== role)) throw new DvsError('EDVSINVAL', `${req.op}: no such migration on node ${this.h.node}`);
    return p;
  }

  private mustPart(id: number, role: Role): Part {
    const p = this.parts.get(id);
    if (!p || p.role !== role) throw new DvsError('EDVSINVAL', `no ${role} migration ${id} on node ${this.h.node}`);
    return p;
  }

  private wait(p: Part, name: string, ms: number, what: string): Promise<unknown> {
    if (p.childExit && name !== 'image') return Promise.reject(new DvsError('EDVSSRCDIED', `the service process exited (${p.childExit})`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        p.waits.delete(name);
        reject(new DvsError('EDVSTIMEDOUT', `timed out after ${ms} ms waiting for ${what} (node ${this.h.node})`));
      }, ms);
      p.waits.set(name, { resolve, reject, timer });
    });
  }

  private settle(p: Part, name: string, v: unknown): void {
    this.take(p, name)?.resolve(v);
  }

  private fail(p: Part, name: string, e: Error): void {
    this.take(p, name)?.reject(e);
  }

  private take(p: Part, name: string): { resolve(v: unknown): void; reject(e: Error): void } | undefined {
    const w = p.waits.get(name);
    if (!w) return undefined;
    clearTimeout(w.timer);
    p.waits.delete(name);
    return w;
  }
}
