// index.ts — the migration machinery of one agent: its participant (every
// node), its orchestrator (for services whose source is this node), the
// hand-over of a `migrate` received here to the source's agent, and the
// routing of {k:'mig'} CONTROL messages, image chunks and runtime requests.
import type { ControlConnection, ControlRequest } from '../agent/control.js';
import { DvsError } from '../errors.js';
import { Orchestrator, type MigrateOptions, type MigrationRecord } from './orchestrator.js';
import { Participant, type MigrationHost } from './participant.js';
import { BINARY_TAG, fromInfo, parseMig, toInfo, type MigMsg } from './protocol.js';

export type { MigrateOptions, MigrationRecord, MigrationState } from './orchestrator.js';
export { Pins } from './pins.js';
export type { MigrationHost } from './participant.js';

/** A delegated `migrate` waits at most this long for the source's answer (ms). */
export const RUN_TIMEOUT_MS = 120_000;

/** Control requests the runtime (`dvs serve`) sends to its agent. */
export const RUNTIME_OPS = new Set(['service', 'mig-image', 'mig-failed', 'mig-standby', 'mig-restored', 'mig-serving']);

export interface MigrationsList {
  node: number;
  /** Migrations this node orchestrated (it was their source), oldest first. */
  records: MigrationRecord[];
  /** Migrations in progress that this node takes part in. */
  active: { id: number; dc: number; ep: number; role: string; src: number }[];
  /** `dvs serve` services registered on this node. */
  services: { dc: number; ep: number; module: string; pid: number; name: string }[];
}

export class Migrations {
  readonly participant: Participant;
  readonly orchestrator: Orchestrator;
  private runSeq = 0;
  private readonly runs = new Map<number, { node: number; resolve(r: MigrationRecord): void; reject(e: Error): void; timer: NodeJS.Timeout }>();

  constructor(private readonly h: MigrationHost) {
    this.participant = new Participant(h);
    this.orchestrator = new Orchestrator(h, this.participant);
  }

  /** Runs a migration: here if this node is the source, else in the source's agent. */
  async migrate(o: MigrateOptions & { timeoutMs?: number }): Promise<MigrationRecord> {
    const { dc, ep, to, method, src } = this.orchestrator.check(o);
    if (src === this.h.node) return this.orchestrator.run(o);
    const ms = o.timeoutMs ?? RUN_TIMEOUT_MS;
    if (!this.h.peersUp().includes(src)) throw new DvsError('EDVSNOTCONN', `the source node ${src} is not reachable from node ${this.h.node}`);
    const rid = ++this.runSeq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.runs.delete(rid);
        reject(new DvsError('EDVSTIMEDOUT', `the source node ${src} did not report on the migration within ${ms} ms`));
      }, ms);
      this.runs.set(rid, { node: src, resolve, reject, timer });
      this.h.send(src, { k: 'mig', t: 'run', rid, dc, ep, to, method, ...(o.quiesceTimeoutMs !== undefined ? { quiesceTimeoutMs: o.quiesceTimeoutMs } : {}) });
    });
  }

  list(): MigrationsList {
    return {
      node: this.h.node,
      records: this.orchestrator.records.map((r) => ({ ...r, fenced: [...r.fenced], steps: { ...r.steps } })),
      active: this.participant.active(),
      services: [...this.participant.services.values()].map((s) => ({ dc: s.dc, ep: s.ep, module: s.module, pid: s.pid, name: s.name })),
    };
  }

  /** A JSON {k:'mig'} message from a peer's agent. */
  onControl(peer: number, raw: unknown): void {
    const m = parseMig(raw);
    if (!m) return void this.h.log('warn', 'malformed migration message ignored', { peer, t: String((raw as { t?: unknown }).t) });
    this.dispatch(peer, m);
  }

  /** A binary CONTROL frame (an image chunk). */
  onBinary(peer: number, bytes: Buffer): boolean {
    if (bytes[0] !== BINARY_TAG) return false;
    this.participant.chunk(peer, bytes);
    return true;
  }

  private dispatch(peer: number, m: MigMsg): void {
    switch (m.t) {
      case 're':
        this.orchestrator.answer(peer, m);
        return;
      case 'progress':
        this.orchestrator.progress(peer, m.id);
        return;
      case 'run':
        this.orchestrator.run(m).then(
          (r) => this.h.send(peer, { k: 'mig', t: 'result', rid: m.rid, ok: true, result: r }),
          (e: unknown) => this.h.send(peer, { k: 'mig', t: 'result', rid: m.rid, ok: false, error: toInfo(e) }),
        );
        return;
      case 'result': {
        const w = this.runs.get(m.rid);
        if (!w || w.node !== peer) return;
        clearTimeout(w.timer);
        this.runs.delete(m.rid);
        if (m.ok) w.resolve(m.result as unknown as MigrationRecord);
        else w.reject(fromInfo(m.error!));
        return;
      }
      default: {
        const step = m.t;
        this.participant.step(m, peer).then(
          (data) => this.h.send(peer, { k: 'mig', t: 're', id: m.id, step, ok: true, data }),
          (e: unknown) => this.h.send(peer, { k: 'mig', t: 're', id: m.id, step, ok: false, error: toInfo(e) }),
        );
      }
    }
  }

  runtimeRequest(req: ControlRequest, conn: ControlConnection): unknown {
    return this.participant.runtimeRequest(req, conn);
  }

  connClosed(conn: ControlConnection): void {
    this.participant.connClosed(conn);
  }

  peerDown(node: number): void {
    this.orchestrator.peerDown(node);
    this.participant.peerDown(node);
    for (const [rid, w] of this.runs)
      if (w.node === node) {
        clearTimeout(w.timer);
        this.runs.delete(rid);
        w.reject(new DvsError('EDVSNOTCONN', `the link to the source node ${node} went down during the migration (its outcome is unknown here: see \`dvs migrate --list\` on node ${node})`));
      }
  }

  stop(): void {
    this.orchestrator.stopAll();
    this.participant.stopAll();
    for (const w of this.runs.values()) {
      clearTimeout(w.timer);
      w.reject(new DvsError('EDVSNOTCONN', 'the agent stops'));
    }
    this.runs.clear();
  }
}
