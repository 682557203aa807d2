// orchestrator.ts — runs one migration of a service endpoint (dc, ep) from
// its node S to node D, in S's agent (the agent that receives `migrate` hands
// it to S's: the source is the one participant whose state matters most, and
// an orchestrator on a third node would be one more node whose death leaves
// the others waiting). One record per migration:
//
//   preparing → started → quiesced → transferred → restored → committed
//                                                           ↘ rolled back
//   PREPARE  D: a standby process of the service's module (outside the freeze)
//   START    every client node (all nodes of the DC but S, D included): pin
//            the endpoint to S, mark the proxy (senders wait), post a FENCE
//            behind what it holds
//   QUIESCE  S: mark the endpoint, the runtime finishes its current message,
//            drains up to every fence, writes the image        (freeze starts)
//            S: expectReplies for its own callers' calls in the image
//   TRANSFER S → D image chunks (binary CONTROL frames ≤ 1 MiB)
//   RESTORE  D: restore, then commit there at once: adopt (the point of no
//            return), the image's messages answered, mark cleared (freeze ends)
//   COMMIT   every other client node: pin → D (proxy repointed), mark cleared;
//            last S: endpoint → proxy to D in place, runtime detached
//   ROLLBACK (any failure before D adopted): marks cleared everywhere, the
//            source's runtime resumes (drained messages first), D's process killed.
// After D adopted, the migration only goes forward (a node that does not
// answer its COMMIT is retried, then left to its watchdog and the directory).
import { DvsError } from '../errors.js';
import { checkDc, checkEp, checkNode } from '../validate.js';
import type { MigrationHost, Participant } from './participant.js';
import { fromInfo, toInfo, type ErrorInfo, type Method, type ReplyMsg, type Step, type StepMsg, METHODS } from './protocol.js';

export type MigrationState = 'preparing' | 'started' | 'quiesced' | 'transferred' | 'restored' | 'committed' | 'rolled back';

export interface MigrateOptions {
  dc: number;
  ep: number;
  /** Destination node. */
  to: number;
  /** Backend: 'state' (issue 5); 'ptrace' and 'criu' are not available yet (EDVSNOSYS). */
  method?: Method;
  /** Bound on the service finishing its current message and draining up to the fences (ms, default 5000). */
  quiesceTimeoutMs?: number;
}

/** What `migrate` answers (and what `migrations` lists). */
export interface MigrationRecord {
  id: number;
  dc: number;
  ep: number;
  from: number;
  to: number;
  method: Method;
  state: MigrationState;
  startedAt: string;
  /** Set when rolled back: why. */
  error?: ErrorInfo;
  /** The endpoint at the destination: its incarnation there and its new pid. */
  gen?: number;
  pid?: number;
  /** Nodes that held their senders (marked and fenced). */
  fenced: number[];
  imageBytes?: number;
  /** Messages carried in the image (the unread mailbox, in order), and the calls among them. */
  messages?: number;
  calls?: number;
  /** The destination process was started before the freeze. */
  standby?: boolean;
  /** From the freeze (quiesce pushed at S) to the first message served at the destination (its mig-serving), on the source's clock (the one-way delay of the answer taken out). */
  downtimeMs?: number;
  /** START to the last COMMIT. */
  totalMs?: number;
  /** Per step (ms): prepare, start, quiesce, transfer (to restored), commitDest, commitOthers, commitSource. */
  steps: Record<string, number>;
  /** When (epoch ms, on the source's clock): START began, the freeze began, the destination served, the last COMMIT ended. */
  at?: { start: number; freeze: number; serving?: number; end?: number };
}

const PREPARE_MS = 20_000;
const START_MS = 5_000;
const QUIESCE_MS = 5_000;
const RESTORE_MS = 20_000;
const COMMIT_MS = 10_000;
const ROLLBACK_MS = 3_000;
const COMMIT_TRIES = 3;
const KEEP_RECORDS = 100;

interface Ask {
  node: number;
  resolve(d: Record<string, unknown>): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class Orchestrator {
  private seq = 0;
  private readonly asks = new Map<string, Ask>();
  /** Migration id → what to do when its destination reports 'restored'. */
  private readonly onProgress = new Map<number, () => void>();
  readonly records: MigrationRecord[] = [];

  constructor(
    private readonly h: MigrationHost,
    private readonly part: Participant,
  ) {
    // Ids are unique per source node: its number in the top 10 bits (fence tokens are u32).
    this.seq = Math.floor(Math.random() * 0x1000);
  }

  private nextId(): number {
    this.seq = (this.seq + 1) & 0x3fffff;
    if (!this.seq) this.seq = 1;
    return ((this.h.node << 22) | this.seq) >>> 0;
  }

  /** Checks the request and where things are; throws the refusals (nothing changed yet). */
  check(o: MigrateOptions): { dc: number; ep: number; to: number; method: Method; src: number } {
    if (o === null || typeof o !== 'object') throw new DvsError('EDVSINVAL', 'migrate takes { dc, ep, to, method }');
    const dc = checkDc(o.dc);
    const ep = checkEp(o.ep);
    const to = checkNode(o.to);
    const method = o.method ?? 'state';
    if (!METHODS.includes(method)) throw new DvsError('EDVSINVAL', `method must be one of ${METHODS.join(', ')}, got ${JSON.stringify(method)}`);
    if (method !== 'state') throw new DvsError('EDVSNOSYS', `the '${method}' migration backend is not available yet (issue 6); use method 'state'`);
    if (o.quiesceTimeoutMs !== undefined && (!Number.isInteger(o.quiesceTimeoutMs) || o.quiesceTimeoutMs <= 0 || o.quiesceTimeoutMs > 600_000))
      throw new DvsError('EDVSINVAL', 'quiesceTimeoutMs must be an integer in [1, 600000]');
    const at = this.h.locate(dc, ep);
    if (!at) throw new DvsError('EDVSNOTBIND', `endpoint ${ep} of DC ${dc} is not bound anywhere this node knows of`);
    const nodes = this.h.dcNodes(dc);
    if (nodes && !nodes.includes(to)) throw new DvsError('EDVSNODCNODE', `node ${to} is not in DC ${dc} (its nodes: ${nodes.join(', ') || 'none'})`);
    if (at.node === to) throw new DvsError('EDVSINVAL', `endpoint ${ep} of DC ${dc} is already on node ${to}`);
    if (to !== this.h.node && !this.h.peersUp().includes(to)) throw new DvsError('EDVSNOTCONN', `node ${to} is not reachable from node ${this.h.node}`);
    return { dc, ep, to, method, src: at.node };
  }

  /** Runs a migration whose source is this node. Resolves with the committed record; rejects (rolled back) with the cause. */
  async run(o: MigrateOptions): Promise<MigrationRecord> {
    const { dc, ep, to, method, src } = this.check(o);
    if (src !== this.h.node) throw new DvsError('EDVSNONODE', `endpoint ${ep} of DC ${dc} is on node ${src}, not ${this.h.node}`);
    const local = this.h.engine.endpoints().find((e) => !e.remote && e.dc === dc && e.ep === ep)!;
    const svc = this.part.service(dc, ep);
    if (!svc) throw new DvsError('EDVSINVAL', `endpoint ${ep} of DC ${dc} on node ${src} is not a dvs service (only endpoints served by \`dvs serve\` migrate)`);
    const id = this.nextId();
    this.part.sourceBegin(id, dc, ep, svc);  // EDVSBUSY if one runs
    const rec: MigrationRecord = { id, dc, ep, from: src, to, method, state: 'preparing', startedAt: new Date().toISOString(), fenced: [], steps: {} };
    this.records.push(rec);
    if (this.records.length > KEEP_RECORDS) this.records.shift();
    const quiesceMs = o.quiesceTimeoutMs ?? QUIESCE_MS;
    // Client nodes: every reachable node that may use the DC, the destination included.
    const members = this.h.dcNodes(dc);
    const up = new Set(this.h.peersUp());
    const clients = [...new Set([to, ...[...up].filter((n) => !members || members.includes(n))])].filter((n) => n !== src).sort((a, b) => a - b);
    const asked = new Set<number>();
    const log = (msg: string, f: Record<string, unknown> = {}): void => this.h.log('info', msg, { id, dc, ep, from: src, to, ...f });
    const t = (): number => performance.now();
    const base = { id, dc, ep, src, gen: local.gen, pid: local.pid, name: local.name };
    let adopted = false;
    let expected: Uint32Array | null = null;  // expectReplies set up for this node's callers (withdrawn on rollback)
    let t0 = t();
    let tStart = 0;
    let tFreeze = 0;
    try {
      // PREPARE at D (not part of the freeze nor of "total").
      asked.add(to);
      const prep = await this.ask(to, { t: 'prepare', ...base, module: svc.module, args: svc.args, timeoutMs: PREPARE_MS }, PREPARE_MS + 2000);
      rec.standby = prep.standby === true;
      rec.steps.prepare = t() - t0;
      // START: client nodes first (their senders wait, their fences go out).
      tStart = t();
      rec.at = { start: epoch(tStart), freeze: 0 };
      rec.state = 'started';
      for (const n of clients) asked.add(n);
      const started = await Promise.all(clients.map((n) => this.ask(n, { t: 'start', ...base }, START_MS).then((d) => [n, d.fenced === true] as const)));
      rec.fenced = started.filter(([, f]) => f).map(([n]) => n);
      rec.steps.start = t() - tStart;
      // QUIESCE at S: the freeze.
      t0 = tFreeze = t();
      rec.at!.freeze = epoch(tFreeze);
      const img = await this.part.sourceQuiesce(id, rec.fenced, quiesceMs);
      rec.state = 'quiesced';
      rec.imageBytes = img.bytes;
      rec.messages = img.messages;
      rec.calls = img.calls.length;
      rec.steps.quiesce = t() - t0;
      log('migration: quiesced', { bytes: img.bytes, messages: img.messages, fenced: rec.fenced });
      // Calls of this node's callers in the image will be answered from D: expected from now on.
      const mine = img.calls.filter((c) => c[0] === this.h.node);
      if (mine.length) {
        expected = Uint32Array.from(mine.flatMap((c) => [dc, c[1], c[2], c[3], ep]));
        this.h.engine.expectReplies(to, expected);
      }
      // TRANSFER to D; RESTORE there, and COMMIT there right after (adopt + the image's messages answered).
      t0 = t();
      const [bytes, chunks] = this.part.sourceSend(id, to);
      if (bytes !== img.bytes) throw new DvsError('EDVSINVAL', `the image file holds ${bytes} bytes, the runtime said ${img.bytes}`);
      rec.state = 'transferred';
      this.part.trace(id, 'chunks sent');
      this.onProgress.set(id, () => {
        rec.state = 'restored';
        rec.steps.transfer = t() - t0;
      });
      let d: Record<string, unknown>;
      try {
        d = await this.ask(to, { t: 'restore', id, bytes, chunks, timeoutMs: RESTORE_MS, commitTimeoutMs: COMMIT_MS }, RESTORE_MS + COMMIT_MS + 2000);
      } catch (e) {
        // Did D adopt before failing to answer? Its answer to ROLLBACK says (a dead or unreachable D did not serve anyone).
        const r = await this.ask(to, { t: 'rollback', id }, ROLLBACK_MS).catch(() => null);
        if (!r || r.committed !== true) throw e;
        d = r;
        this.h.log('warn', 'migration: the destination committed without answering in time; going forward', { id });
      } finally {
        this.onProgress.delete(id);
      }
      adopted = true;
      this.part.trace(id, 'destination committed');
      rec.pid = d.pid as number;
      rec.gen = d.gen as number;
      const num = (k: string): number | undefined => (typeof d[k] === 'number' ? (d[k] as number) : undefined);
      const tAnswer = t();
      rec.steps.restoreCommit = tAnswer - t0;
      for (const [k, n] of [['restoreAtDest', 'restoreMs'], ['writeAtDest', 'writeMs'], ['adoptToServing', 'adoptToServingMs']] as const) if (num(n) !== undefined) rec.steps[k] = num(n)!;
      // Freeze → the first message served at D, on this clock: the answer's arrival minus D's time between
      // serving and answering. (It overstates by the answer's one-way delay, under 1 ms; halving the round
      // trip instead understated it, since the RESTORE request waits behind the image chunks.)
      const served = num('servedAfterMs');
      const answered = num('answeredAfterMs');
      rec.downtimeMs = served !== undefined && answered !== undefined ? tAnswer - tFreeze - Math.max(0, answered - served) : tAnswer - tFreeze;
      rec.at!.serving = epoch(tFreeze + rec.downtimeMs);
    } catch (e) {
      if (adopted) throw e;  // (not reached: nothing after adopted throws)
      rec.state = 'rolled back';
      rec.error = toInfo(e);
      log('migration: rolled back', { error: rec.error });
      // The source's service goes on (drained messages first), then the others let their senders go.
      if (expected) this.h.engine.forgetReplies(to, expected);  // the source answers those calls itself
      this.part.sourceRollback(id);
      await Promise.all([...asked].map((n) => this.ask(n, { t: 'rollback', id }, ROLLBACK_MS).catch((x: Error) => this.h.log('warn', 'migration: rollback not confirmed', { id, node: n, error: x.message }))));
      throw fromInfo(rec.error, `migration ${id} of endpoint ${ep} (DC ${dc}) from node ${src} to node ${to} rolled back: `);
    }
    // Forward only from here: the other client nodes, then this node.
    t0 = t();
    const others = clients.filter((n) => n !== to);
    await Promise.all(
      others.map(async (n) => {
        for (let i = 1; ; i++) {
          try {
            await this.ask(n, { t: 'commit', id, dest: to, gen: rec.gen!, pid: rec.pid!, timeoutMs: COMMIT_MS }, COMMIT_MS);
            return;
          } catch (e) {
            if (i >= COMMIT_TRIES || (e as DvsError).code === 'EDVSNOTCONN') {
              this.h.log('warn', 'migration: a node did not confirm COMMIT (its proxy follows the directory, or the source passes its messages on)', { id, node: n, error: (e as Error).message });
              return;
            }
          }
        }
      }),
    );
    rec.steps.commitOthers = t() - t0;
    t0 = t();
    this.part.sourceCommit(id, to, rec.gen!, rec.pid!);
    rec.steps.commitSource = t() - t0;
    rec.totalMs = t() - tStart;
    rec.at!.end = epoch(tStart + rec.totalMs);
    rec.state = 'committed';
    log('migration: committed', { downtimeMs: round(rec.downtimeMs!), totalMs: round(rec.totalMs), messages: rec.messages, bytes: rec.imageBytes });
    return rec;
  }

  /** Sends a step to a participant (this node's own participant directly) and waits for its answer. */
  ask(node: number, m: StepMsg, ms: number): Promise<Record<string, unknown>> {
    if (node === this.h.node) return this.part.step(m, node);
    const k = `${m.id}/${m.t}/${node}`;
    this.asks.get(k)?.reject(new DvsError('EDVSINVAL', 'superseded'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.asks.delete(k);
        reject(new DvsError('EDVSTIMEDOUT', `node ${node} did not answer ${m.t} of migration ${m.id} within ${ms} ms`));
      }, ms);
      this.asks.set(k, { node, resolve, reject, timer });
      if (!this.h.peersUp().includes(node)) {
        clearTimeout(timer);
        this.asks.delete(k);
        reject(new DvsError('EDVSNOTCONN', `node ${node} is not reachable`));
        return;
      }
      this.h.send(node, { k: 'mig', ...m });
    });
  }

  /** A participant's answer. */
  answer(from: number, r: ReplyMsg): void {
    const k = `${r.id}/${r.step}/${from}`;
    const a = this.asks.get(k);
    if (!a) return;
    clearTimeout(a.timer);
    this.asks.delete(k);
    if (r.ok) a.resolve(r.data ?? {});
    else a.reject(fromInfo(r.error!, `node ${from}: `));
  }

  /** The destination's unsolicited progress report. */
  progress(from: number, id: number): void {
    this.onProgress.get(id)?.();
    void from;
  }

  /** The link to `node` went down: what waits for it fails now. */
  peerDown(node: number): void {
    for (const [k, a] of this.asks)
      if (a.node === node) {
        clearTimeout(a.timer);
        this.asks.delete(k);
        a.reject(new DvsError('EDVSNOTCONN', `the link to node ${node} went down`));
      }
  }

  stopAll(): void {
    for (const a of this.asks.values()) {
      clearTimeout(a.timer);
      a.reject(new DvsError('EDVSNOTCONN', 'the agent stops'));
    }
    this.asks.clear();
  }
}

function epoch(perfNow: number): number {
  return Math.round((performance.timeOrigin + perfNow) * 1000) / 1000;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

export type { Step };
