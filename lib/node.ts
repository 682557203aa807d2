// node.ts — a process's attachment to a node's shared-memory arena.
import { DvsError, check, codes } from './errors.js';
import { Endpoint } from './endpoint.js';
import { binding, layout, openNative, type NativeNode, type NativeStats } from './native.js';
import { checkDc, checkEp, checkName, checkNode } from './validate.js';
import { defaultNamespace, registerWithAgent } from './agent/control.js';
import type { Socket } from 'node:net';

export interface BindOptions {
  /**
   * A name for the endpoint (1-31 bytes of UTF-8, no NUL), published by the
   * cluster directory: `cluster.lookup(dc, name)`, `cluster.waitForBind(dc, name)`.
   * Unique among this node's endpoints of the DC (EDVSSLOTUSED otherwise).
   */
  name?: string;
}

export interface AttachOptions {
  /** Node number (0..1023); default 0, or $DVS_NODE. */
  node?: number;
  /** Namespace of the shared-memory segment (default $DVS_NAMESPACE or "default"): one arena per (namespace, node). */
  namespace?: string;
  /** How an idle async receiver is woken: a doorbell socket polled by libuv (default) or a waiter thread. */
  wake?: 'doorbell' | 'thread';
  /**
   * Before the event loop sleeps while awaiting dvs, poll for up to this many
   * microseconds (adaptive: shrinks when polling does not pay off). Default 50;
   * 0 = always sleep immediately.
   */
  asyncSpinUs?: number;
  /** Create the node's arena if no process has it yet (default true); false fails with EDVSDVSINIT. */
  create?: boolean;
  /** Arena sizing, used only by the process that creates the segment. */
  maxProcs?: number;
  maxEndpoints?: number;
  inboxCells?: number;
  replyCells?: number;
  poolMib?: number;
}

/** Automatic endpoint numbers (bind(dc) without a number): the upper half of the endpoint space, 8192 per node. */
export const AUTO_EP_BASE = 0x800000;
export const AUTO_EP_PER_NODE = 8192;

/** How often waiting callers re-check that their destinations are alive. */
const PEER_CHECK_MS = 100;

// Nodes still attached when the process exits (process.exit(), an uncaught
// exception) are detached on the way out, so the last process leaves no
// segment behind. (A SIGKILLed process is reaped by the others instead.)
const live = new Set<Node>();
let exitHook = false;
function detachAllOnExit(): void {
  for (const n of [...live]) n.detach();
}

export class Node {
  readonly id: number;
  /** @internal */ readonly _native: NativeNode;
  /** @internal */ readonly _ab: ArrayBuffer;
  /** @internal */ readonly _scratch: Int32Array;
  /** @internal Offsets of blocks from alloc() not yet sent. */ readonly _allocs = new Set<number>();
  private readonly endpoints = new Set<Endpoint>();
  private waiting = 0;
  private timer: NodeJS.Timeout | null = null;
  private nrel = 0;
  private flushQueued = false;
  private detached = false;
  private agentConn: Socket | null = null;
  private nextAuto = 0;

  /** @internal */
  constructor(opts: AttachOptions) {
    const envNode = process.env.DVS_NODE;
    this.id = checkNode(opts.node ?? (envNode !== undefined ? Number(envNode) : 0));
    if (opts.namespace !== undefined && (typeof opts.namespace !== 'string' || !/^[A-Za-z0-9_.-]{1,100}$/.test(opts.namespace)))
      throw new DvsError('EDVSINVAL', 'namespace must be 1-100 characters of [A-Za-z0-9_.-]');
    if (opts.wake !== undefined && opts.wake !== 'doorbell' && opts.wake !== 'thread')
      throw new DvsError('EDVSINVAL', `wake must be 'doorbell' or 'thread'`);
    if (opts.asyncSpinUs !== undefined && (typeof opts.asyncSpinUs !== 'number' || !(opts.asyncSpinUs >= 0)))
      throw new DvsError('EDVSINVAL', 'asyncSpinUs must be a number >= 0');
    for (const k of ['maxProcs', 'maxEndpoints', 'inboxCells', 'replyCells', 'poolMib'] as const) {
      const v = opts[k];
      if (v !== undefined && (!Number.isInteger(v) || v <= 0)) throw new DvsError('EDVSINVAL', `${k} must be a positive integer`);
    }
    const { namespace, ...rest } = opts;
    this._native = openNative(
      { ...rest, node: this.id, ns: namespace },
      () => this.onWake(),
    );
    this._ab = this._native.arena();
    this._scratch = new Int32Array(this._native.scratch());
    // With a node agent serving this arena, keep a connection to it: it reaps
    // this process the moment the connection closes.
    if (this._native.info().agentPid) this.agentConn = registerWithAgent(defaultNamespace(namespace), this.id);
    // Waiting callers re-check that their destinations are alive; the timer
    // never keeps the process alive (the doorbell handle does, while waiting).
    this.timer = setInterval(() => this.checkPeers(), PEER_CHECK_MS);
    this.timer.unref();
    live.add(this);
    if (!exitHook) {
      exitHook = true;
      process.on('exit', detachAllOnExit);
    }
  }

  /**
   * Binds endpoint `ep` of DC `dc` to this process; without `ep` (or with
   * `null`), an automatic number (see bindAuto). EDVSNODCNODE when the DC
   * exists in the cluster's DC table and this node is not one of its nodes.
   */
  bind(dc: number, ep?: number | null, opts?: BindOptions): Endpoint {
    this.checkAttached();
    const d = checkDc(dc);
    if (opts !== undefined && (opts === null || typeof opts !== 'object'))
      throw new DvsError('EDVSINVAL', 'bind options must be an object ({ name })');
    const name = opts?.name === undefined ? undefined : checkName(opts.name);
    if (ep === undefined || ep === null) return this.bindAuto(d, name);
    const e = checkEp(ep);
    const h = check(this._native.bind(d, e, name), binding.lastErrorDetail());
    return this.opened(h, d, e);
  }

  /**
   * An automatic endpoint number, for clients that do not care which: the
   * first free one in this node's own range (AUTO_EP_BASE + node × AUTO_EP_PER_NODE
   * + k), so nodes never pick the same number. EDVSNOSPC when the range is full.
   */
  /**
   * Takes over endpoint (dc, ep) that the node's agent handed to this process
   * (a migration's COMMIT on the destination node: the agent turned its proxy
   * into a local endpoint owned by this process, same incarnation).
   * EDVSNOTBIND if it was not handed to this process.
   */
  adopt(dc: number, ep: number): Endpoint {
    this.checkAttached();
    const d = checkDc(dc);
    const e = checkEp(ep);
    const h = check(this._native.adopt(d, e), binding.lastErrorDetail());
    return this.opened(h, d, e);
  }

  private bindAuto(dc: number, name?: string): Endpoint {
    const base = AUTO_EP_BASE + this.id * AUTO_EP_PER_NODE;
    for (let k = 0; k < AUTO_EP_PER_NODE; k++) {
      const e = base + ((this.nextAuto + k) % AUTO_EP_PER_NODE);
      const h = this._native.bind(dc, e, name);
      // EDVSSLOTUSED for a taken number; a taken name fails every number alike.
      if (h === codes.EDVSSLOTUSED && !(name && binding.lastErrorDetail().startsWith('name '))) continue;
      check(h, binding.lastErrorDetail());
      this.nextAuto = (e - base + 1) % AUTO_EP_PER_NODE;
      return this.opened(h, dc, e);
    }
    throw new DvsError('EDVSNOSPC', `all ${AUTO_EP_PER_NODE} automatic endpoint numbers of node ${this.id} in DC ${dc} are bound`);
  }

  private opened(h: number, dc: number, ep: number): Endpoint {
    const endpoint = new Endpoint(this, h, dc, ep);
    this.endpoints.add(endpoint);
    return endpoint;
  }

  /** Closes every endpoint and detaches from the arena (the last process removes the segment). */
  detach(): void {
    if (this.detached) return;
    for (const e of [...this.endpoints]) e.close();
    this.flushReleases();
    this.detached = true;
    live.delete(this);
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this._native.detach();
    this.agentConn?.destroy();
    this.agentConn = null;
  }

  get isDetached(): boolean {
    return this.detached;
  }

  /** The node's endpoint table, processes and payload pools, read from shared memory. */
  stats(): NativeStats {
    this.checkAttached();
    return this._native.stats() as NativeStats;
  }

  /** Reclaims what crashed processes left (done automatically when needed); returns how many were reaped. */
  reap(): number {
    this.checkAttached();
    return this._native.reap();
  }

  /** Segment name, process slot and wake-up mode. */
  info(): ReturnType<NativeNode['info']> {
    this.checkAttached();
    return this._native.info();
  }

  /** @internal */
  _closed(e: Endpoint): void {
    this.endpoints.delete(e);
    if (!this.detached) this._native.close(e._h);
  }

  /** @internal A received block to free (batched into the next native receive). */
  _release(block: number): void {
    if (this.detached) return;
    this._scratch[layout.releaseBase + this.nrel++] = block;
    if (this.nrel === layout.maxBatch) this.flushReleases();
    else if (!this.flushQueued) {
      // Usually the next receive hands the batch to native code first; this
      // turn of the event loop catches releases that no receive follows.
      this.flushQueued = true;
      setImmediate(() => this.flushReleases());
    }
  }

  /** @internal Number of pending releases, handed to (and cleared by) the next native receive. */
  _releasePending(): number {
    const n = this.nrel;
    this.nrel = 0;
    return n;
  }

  /** @internal */
  _waitInc(): void {
    if (this.waiting++ === 0) this._native.ref();
  }

  /** @internal */
  _waitDec(): void {
    if (--this.waiting === 0) this._native.unref();
  }

  /** @internal Frees an allocated block that will not be sent. */
  _freeAlloc(off: number): void {
    if (!this._allocs.has(off) || this.detached) return;
    check(this._native.freeAlloc(off));
    this._allocs.delete(off);
  }

  /** @internal */
  _noPendingReleases(): boolean {
    return this.nrel === 0;
  }

  /** @internal Frees released blocks now (before anything that allocates). */
  _flushReleases(): void {
    if (this.nrel && !this.detached) this._native.flushReleases(this._releasePending());
  }

  private flushReleases(): void {
    this.flushQueued = false;
    this._flushReleases();
  }

  private onWake(): void {
    for (const e of this.endpoints) if (e._waiting()) e._pump();
  }

  private checkPeers(): void {
    if (this.waiting === 0) return;
    for (const e of this.endpoints) if (e._waiting()) e._checkPeers();
  }

  private checkAttached(): void {
    if (this.detached) throw new DvsError('EDVSDVSINIT', 'this node has been detached');
  }
}

/** Attaches this process to a node's arena (creating the arena if it is the first). */
export function attach(opts: AttachOptions = {}): Node {
  if (opts === null || typeof opts !== 'object') throw new DvsError('EDVSINVAL', 'attach() takes an options object');
  return new Node(opts);
}
