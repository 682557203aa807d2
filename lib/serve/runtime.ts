// runtime.ts — the `dvs serve` runtime (the process side of the `state`
// migration backend): runs a service module on an endpoint, one message at a
// time and in order, and carries out the migration steps its agent pushes
// (docs/DESIGN.md "dvs serve: the service runtime"):
//   source       mig-quiesce → finish the current message, drain the mailbox
//                up to the fences (kept, not handled), snapshot(), write the
//                image → 'mig-image';  mig-resume → handle the kept messages,
//                serve again;  mig-detached → exit 0 without unbinding.
//   destination  (--restore FILE) attach without binding, init(), restore(),
//                → 'mig-restored';  mig-adopt → node.adopt(), answer the
//                image's messages, → 'mig-serving', serve.  (--standby: load
//                and attach first, → 'mig-standby'; mig-restore {file} → as
//                --restore FILE from there.)  mig-abort → exit 1.
import { existsSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultNamespace } from '../agent/control.js';
import type { Endpoint } from '../endpoint.js';
import { DvsError } from '../errors.js';
import { Message, type ReplyTarget } from '../message.js';
import { attach, type Node } from '../node.js';
import { checkDc, checkEp, checkName, checkNode } from '../validate.js';
import { AgentLink, type Push } from './agent-link.js';
import { decodeImage, encodeImage, readImageFile, writeImageFile, type ImageMessage, type ServiceImage } from './image.js';
import { errorPayload, isThenable, loadModule, modulePath, Msg, replyPayload, snapshotBytes, type ServiceContext, type ServiceModule } from './module-host.js';

export interface ServeOptions {
  /** Path of the service module (relative to the current directory or absolute). */
  module: string;
  dc: number;
  ep: number;
  /** Default $DVS_NODE or 0. */
  node?: number;
  namespace?: string;
  /** A name for the endpoint (published by the cluster directory). */
  name?: string;
  /** The module's own arguments (init(ctx).args). */
  args?: string[];
  /** Start as a migration's destination from this image file (attach, restore, wait for mig-adopt). */
  restore?: string;
  /** Start as a migration's destination before the image exists: load, attach, wait for the push mig-restore. */
  standby?: boolean;
  /** Lifecycle events (the CLI prints one line each). */
  onEvent?: (e: ServeEvent) => void;
  /** Warnings (the CLI writes them to stderr). */
  onWarn?: (msg: string) => void;
}

export type ServeEvent =
  | { event: 'serving'; dc: number; ep: number; node: number; pid: number; module: string; restored: boolean; migratable: boolean; ms?: { adopt: number; messages: number } }
  | { event: 'quiesced'; mig: number; messages: number; stateBytes: number; imageBytes: number; file: string; ms: { drain: number; snapshot: number; write: number } }
  | { event: 'resumed'; mig: number; messages: number }
  | { event: 'failed'; mig: number; code: string; message: string }
  | { event: 'detached'; mig: number }
  | { event: 'restored'; mig: number; messages: number; stateBytes: number; ms: { read: number; init: number; restore: number } }
  | { event: 'stopped' };

type State = 'starting' | 'standby' | 'serving' | 'draining' | 'quiesced' | 'restoring' | 'adopting' | 'ended';

interface Migration {
  id: number;
  /** When the quiesce was pushed (performance.now()). */
  t0: number;
  /** Nodes whose fence (token = id) must be seen before the image is taken. */
  need: number[];
  timer: NodeJS.Timeout | null;
  file: string | null;
}

/**
 * A standby process reads its image into a buffer of this size touched in
 * advance (outside the freeze): faulting in fresh pages costs more than the
 * read itself (≈ 4 ms per MiB on a small VM).
 */
const STANDBY_SCRATCH_BYTES = 4 << 20;
/** Where a source writes its image: memory (/dev/shm) when there is one. */
const IMAGE_DIR = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
/** How long an exiting runtime waits for the agent to acknowledge what it sent last (ms). */
const LINGER_MS = 1000;
/** Quiesce timeout when the agent gives none. */
const DEFAULT_QUIESCE_MS = 5000;
/** Fence tokens remembered (a fence may arrive before its quiesce push). */
const MAX_FENCE_TOKENS = 64;
const NONE = Symbol('none');
const EMPTY = new Uint8Array(0);

type Received = Message | Error;

function u32Id(v: unknown): number | null {
  return Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 0xffffffff ? (v as number) : null;
}

/** A push's migration id: `mig` (`id` also accepted). */
function pushId(p: Push): number | null {
  return u32Id(p.mig ?? p.id);
}

/** Reads and checks an image for endpoint (dc, ep) of module `abs` (EDVSINVAL otherwise). */
function readImage(file: string, dc: number, ep: number, abs: string, scratch?: Buffer): ServiceImage {
  let bytes: Buffer;
  try {
    bytes = readImageFile(file, scratch);
  } catch (e) {
    throw new DvsError('EDVSINVAL', `cannot read the image ${file}: ${(e as Error).message}`);
  }
  const image = decodeImage(bytes);
  if (image.dc !== dc || image.ep !== ep) throw new DvsError('EDVSINVAL', `the image is of endpoint ${image.dc}:${image.ep}, not ${dc}:${ep}`);
  if (image.module !== abs) throw new DvsError('EDVSINVAL', `the image is of module ${image.module}, not ${abs}`);
  return image;
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

function codeOf(e: unknown): string {
  const c = (e as { code?: unknown })?.code;
  return typeof c === 'string' ? c : 'ERROR';
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message.replace(/^EDVS[A-Z0-9]+: /, '') : String(e);
}

export class ServiceRuntime {
  /** Resolves with the exit status (0: stopped, or detached after a migration); rejects on a fatal error. */
  readonly done: Promise<number>;
  private resolveDone!: (code: number) => void;
  private rejectDone!: (e: Error) => void;
  private state: State;
  private ep: Endpoint | null = null;
  private link: AgentLink | null = null;
  private mig: Migration | null = null;
  /** Messages drained during a quiesce (kept, not handled). */
  private kept: ImageMessage[] = [];
  /** Messages to handle before the mailbox: the kept ones after a rollback, the image's at the destination. */
  private backlog: ImageMessage[] = [];
  /** token → nodes whose fence with that token arrived. */
  private readonly fences = new Map<number, Set<number>>();
  /** A receive not consumed yet (the loop also waits for wake-ups). */
  private recv: Promise<Received> | null = null;
  /** A wake-up (a push or a timer changed something): the loop looks at its state again. */
  private woken = false;
  private wakeFn: (() => void) | null = null;
  private finished = false;
  private stopRequested = false;
  private keeper: NodeJS.Timeout | null = null;
  private warned = 0;
  private readonly dc: number;
  private readonly epNum: number;
  private readonly moduleAbs: string;
  /** The module's arguments and the endpoint's name (at a destination: the image's). */
  private args: string[];
  private name: string;
  /** At a destination: the image being restored. */
  private image: ServiceImage | null = null;
  /** A standby's pre-touched read buffer for the image. */
  private scratch: Buffer | undefined;
  /** When mig-adopt came and node.adopt() returned (performance.now()). */
  private adoptMs: [number, number] = [0, 0];
  private readonly emit: (e: ServeEvent) => void;
  private readonly warnFn: (msg: string) => void;

  private constructor(
    opts: ServeOptions,
    private readonly mod: ServiceModule,
    private readonly node: Node,
    moduleAbs: string,
  ) {
    this.dc = opts.dc;
    this.epNum = opts.ep;
    this.moduleAbs = moduleAbs;
    this.args = opts.args ?? [];
    this.name = opts.name ?? '';
    this.emit = opts.onEvent ?? (() => {});
    this.warnFn = opts.onWarn ?? (() => {});
    this.state = 'starting';
    this.done = new Promise<number>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    this.done.catch(() => {});  // a failure before anyone awaits `done` is not an unhandled rejection
    // The runtime lives until stopped, detached or failed (also while it waits, holding no receive).
    this.keeper = setInterval(() => {}, 1 << 30);
  }

  /**
   * Loads the module, attaches, and either binds and serves (a fresh start)
   * or, with `restore`, restores the image and waits for `mig-adopt` (with
   * `standby`, first waits for `mig-restore`). Errors before that (bad
   * arguments, module, image, bind, restore()) are thrown.
   */
  static async start(opts: ServeOptions): Promise<ServiceRuntime> {
    if (opts === null || typeof opts !== 'object') throw new DvsError('EDVSINVAL', 'ServiceRuntime.start() takes an options object');
    const dc = checkDc(opts.dc);
    const ep = checkEp(opts.ep);
    const envNode = process.env.DVS_NODE;
    const nodeId = checkNode(opts.node ?? (envNode !== undefined ? Number(envNode) : 0));
    if (opts.name !== undefined) checkName(opts.name);
    if (opts.args !== undefined && (!Array.isArray(opts.args) || !opts.args.every((a) => typeof a === 'string')))
      throw new DvsError('EDVSINVAL', 'args must be an array of strings');
    if (opts.restore !== undefined && opts.standby) throw new DvsError('EDVSINVAL', 'restore and standby exclude each other');
    const abs = modulePath(opts.module);
    const t0 = performance.now();
    const image = opts.restore !== undefined ? readImage(opts.restore, dc, ep, abs) : null;
    const readMs = performance.now() - t0;
    const mod = await loadModule(abs);
    const namespace = defaultNamespace(opts.namespace);
    const node = attach({ node: nodeId, namespace });
    const rt = new ServiceRuntime({ ...opts, dc, ep }, mod, node, abs);
    try {
      await rt.open(namespace, nodeId, image, !!opts.standby, readMs);
    } catch (e) {
      await rt.link?.settled(LINGER_MS);  // a mig-failed on its way must reach the agent
      rt.teardown();
      throw e;
    }
    void rt.loop().then(
      () => rt.finish(0),
      (e: unknown) => rt.fail(e instanceof Error ? e : new Error(String(e))),
    );
    return rt;
  }

  /** Stops after the message being handled (deferred while a migration is in progress); `done` resolves 0. */
  stop(): void {
    this.stopRequested = true;
    this.wake();
  }

  /** The endpoint being served (null at a destination before mig-adopt). */
  get endpoint(): Endpoint | null {
    return this.ep;
  }

  // ------------------------------------------------------------ start-up

  private async open(namespace: string, nodeId: number, image: ServiceImage | null, standby: boolean, readMs: number): Promise<void> {
    const dest = image !== null || standby;
    try {
      this.link = await AgentLink.connect(namespace, nodeId, (m) => this.warn(m));
    } catch (e) {
      if (dest) throw new DvsError('EDVSNOTCONN', `a migration's destination needs the agent of node ${nodeId}: ${messageOf(e)}`);
      this.warn(`no agent for node ${nodeId} (${messageOf(e)}): serving without migration support`);
    }
    if (this.link) {
      this.link.onPush = (p) => this.onPush(p);
      this.link.onClose = (err) => this.onLinkClosed(err);
    }
    if (standby) {
      // Outside the freeze: touch the read buffer, and run the image code once.
      this.scratch = Buffer.allocUnsafeSlow(STANDBY_SCRATCH_BYTES).fill(0);  // written: every page faulted in now (Buffer.alloc's zero pages are not)
      this.warmUp();
      this.state = 'standby';
      this.link!.send('mig-standby', { dc: this.dc, ep: this.epNum, pid: process.pid });
      return;
    }
    if (image) return this.restoreImage(image, readMs);
    if (this.mod.init) await this.mod.init(this.context(false));
    this.ep = this.node.bind(this.dc, this.epNum, this.name ? { name: this.name } : undefined);
    this.state = 'serving';
    this.announce(false);
    if (this.link) setImmediate(() => this.warmUp());
  }

  /**
   * Runs the image code once on a tiny image (encode, write, decode): the
   * first run in a process is several times slower than the next (compiling,
   * crypto set-up), and it should not be the one inside a freeze.
   */
  private warmUp(): void {
    if (this.finished) return;
    const tiny: ServiceImage = { id: 1, ...this.identity(), state: EMPTY, messages: [{ kind: 'call', src: 0, srcNode: 0, srcGen: 0, callId: 0, bits: 0, payload: EMPTY }] };
    try {
      writeImageFile('/dev/null', tiny);
    } catch {
      /* no /dev/null: only the first image is slower */
    }
    decodeImage(encodeImage(tiny));
  }

  private context(restoring: boolean): ServiceContext {
    return { dc: this.dc, ep: this.epNum, node: this.node.id, name: this.name, args: [...this.args], restoring };
  }

  /** At a destination: init() and restore() from the image, then wait for mig-adopt. Failures are reported, then thrown. */
  private async restoreImage(img: ServiceImage, readMs: number): Promise<void> {
    this.image = img;
    this.args = img.args;
    this.name = img.name;
    const t0 = performance.now();
    let t1 = t0;
    try {
      if (img.state && !this.mod.restore) throw new DvsError('EDVSINVAL', `the image carries state but ${this.moduleAbs} has no restore(bytes)`);
      if (this.mod.init) await this.mod.init(this.context(true));
      t1 = performance.now();
      try {
        if (img.state) await this.mod.restore!(img.state);
      } catch (e) {
        throw new DvsError('EDVSINVAL', `restore() threw: ${messageOf(e)}`);
      }
    } catch (e) {
      this.link?.send('mig-failed', { mig: img.id, error: { code: codeOf(e), message: messageOf(e) } });
      throw e;
    }
    if (this.finished) throw new DvsError('EDVSNOTCONN', 'the agent connection closed while restoring');
    this.state = 'restoring';
    this.link?.send('mig-restored', { mig: img.id, dc: this.dc, ep: this.epNum, pid: process.pid });
    const ms = { read: round(readMs), init: round(t1 - t0), restore: round(performance.now() - t1) };
    this.emit({ event: 'restored', mig: img.id, messages: img.messages.length, stateBytes: img.state?.byteLength ?? 0, ms });
    this.wake();
  }

  /** The service as the agent and the image know it. */
  private identity(): { dc: number; ep: number; node: number; module: string; args: string[]; name: string } {
    return { dc: this.dc, ep: this.epNum, node: this.node.id, module: this.moduleAbs, args: this.args, name: this.name };
  }

  /** Bound (or adopted) and serving: tell the agent, and the CLI. */
  private announce(restored: boolean): void {
    this.link?.send('service', { ...this.identity(), pid: process.pid });
    const [t0, t1] = this.adoptMs;
    const ms = restored ? { ms: { adopt: round(t1 - t0), messages: round(performance.now() - t1) } } : {};
    this.emit({ event: 'serving', dc: this.dc, ep: this.epNum, node: this.node.id, pid: process.pid, module: this.moduleAbs, restored, migratable: !!this.link, ...ms });
  }

  // ------------------------------------------------------------ the loop

  private wake(): void {
    this.woken = true;
    const f = this.wakeFn;
    this.wakeFn = null;
    f?.();
  }

  /** Resolves at the next wake-up (at once if one happened since the last look). */
  private waitWake(): Promise<void> {
    if (this.woken) {
      this.woken = false;
      return Promise.resolve();
    }
    return new Promise((r) => (this.wakeFn = r));
  }

  /** The outstanding receive's result, or NONE at a wake-up (the receive stays outstanding). */
  private recvOrWake(): Promise<Received | typeof NONE> {
    const recv = this.recv!;
    if (this.woken) return Promise.resolve(NONE);
    return new Promise((resolve) => {
      this.wakeFn = () => resolve(NONE);
      void recv.then(resolve);
    });
  }

  private async loop(): Promise<void> {
    for (;;) {
      const s = this.state;
      if (s === 'ended') return;
      if (this.stopRequested && (s === 'serving' || s === 'restoring' || s === 'standby')) return;
      if (this.backlog.length && (s === 'serving' || s === 'adopting')) {
        await this.handleKept(this.backlog.shift()!);
        continue;
      }
      if (s === 'adopting') {
        this.adopted();
        continue;
      }
      if (s === 'quiesced' || s === 'restoring' || s === 'standby' || s === 'starting') {
        await this.waitWake();
        continue;
      }
      if (s === 'draining' && this.fencesDone()) {
        // Idle when the quiesce came: free the outstanding receive with a
        // notification to ourselves, so that nothing is taken after the image.
        if (!this.recv) {
          await this.finishDrain();
          continue;
        }
        this.kick();
      }
      this.recv ??= this.ep!.receive().then(
        (m) => m,
        (e: Error) => e,
      );
      const r = await this.recvOrWake();
      this.wakeFn = null;
      if (r === NONE) {
        this.woken = false;
        continue;
      }
      this.recv = null;
      if (r instanceof Error) {
        if (this.stopRequested || this.state === 'ended') return;
        throw r;
      }
      await this.dispatch(r);
    }
  }

  private isKick(m: Message): boolean {
    return m.kind === 'notify' && m.src === this.epNum;
  }

  /** Wakes our own outstanding receive (a notification from this endpoint to itself, never given to handle()). */
  private kick(): void {
    try {
      this.ep!.notify(this.epNum, 1);
    } catch {
      // (more than 64 notifiers at once and a held mailbox) try again shortly
      setTimeout(() => this.wake(), 10).unref();
    }
  }

  private async dispatch(m: Message): Promise<void> {
    if (m.kind === 'fence') {
      this.noteFence(m.srcNode, m.bits);
      m.release();
      return;
    }
    if (this.isKick(m)) {
      m.release();
      return;
    }
    if (this.state === 'draining') {
      this.keep(m);
      return;
    }
    await this.handleLive(m);
  }

  private keep(m: Message): void {
    const kind = m.kind as ImageMessage['kind'];
    this.kept.push({ kind, src: m.src, srcNode: m.srcNode, srcGen: m._srcGen, callId: m._callId, bits: m.bits, payload: m.length ? m.payload.slice() : EMPTY });
    m.release();
  }

  private async handleLive(m: Message): Promise<void> {
    const kind = m.kind as ImageMessage['kind'];
    await this.handleOne(new Msg(kind, this.dc, m.src, m.srcNode, m.bits, m.payload), (p) => m.reply(p));
    m.release();
  }

  private handleKept(k: ImageMessage): Promise<void> {
    const target: ReplyTarget = { dc: this.dc, ep: k.src, gen: k.srcGen, node: k.srcNode, callId: k.callId };
    return this.handleOne(new Msg(k.kind, this.dc, k.src, k.srcNode, k.bits, k.payload), (p) => this.ep!.replyTo(target, p));
  }

  /** handle(msg); a call is answered through `reply` with its result or the error payload. */
  private async handleOne(msg: Msg, reply: (p: Uint8Array | string | null) => void): Promise<void> {
    let result: unknown;
    let err: unknown = NONE;
    try {
      result = this.mod.handle(msg);
      if (isThenable(result)) result = await result;
    } catch (e) {
      err = e;
    }
    if (msg.kind === 'call') this.answer(reply, result, err, msg.src, msg.srcNode);
    else if (err !== NONE) this.warn(`handle() threw for a '${msg.kind}' message from ${msg.srcNode}:${msg.src}: ${messageOf(err)}`);
  }

  /** Replies to a call with handle()'s result, or the error payload. */
  private answer(reply: (p: Uint8Array | string | null) => void, result: unknown, err: unknown, src: number, srcNode: number): void {
    let payload: Uint8Array | string | null = null;
    if (err === NONE) {
      try {
        payload = replyPayload(result);
      } catch (e) {
        err = e;  // e.g. a result JSON cannot represent
      }
    }
    if (err !== NONE) payload = errorPayload(err);
    try {
      reply(payload);
    } catch (e) {
      const code = codeOf(e);
      if (code === 'EDVSPROCSTS') return;  // the caller gave up or is gone: nobody to tell
      if (code === 'EDVS2BIG') {
        try {
          reply(errorPayload(e));
          return;
        } catch {
          /* reported below */
        }
      }
      this.warn(`reply to ${srcNode}:${src} failed: ${messageOf(e)}`);
    }
  }

  private warn(msg: string): void {
    if (++this.warned <= 100) this.warnFn(msg);
    else if (this.warned === 101) this.warnFn('(further warnings are not shown)');
  }

  // ------------------------------------------------------------ migration: source

  private onPush(p: Push): void {
    try {
      switch (p.ev) {
        case 'mig-quiesce':
          return this.onQuiesce(p);
        case 'mig-resume':
          return this.onResume(p);
        case 'mig-detached':
          return this.onDetached(p);
        case 'mig-adopt':
          return this.onAdopt(p);
        case 'mig-restore':
          return this.onRestore(p);
        case 'mig-abort':
          return this.onAbort(p);
        default:
          return;  // other pushes are not for the runtime
      }
    } catch (e) {
      this.fail(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private onQuiesce(p: Push): void {
    const id = pushId(p);
    if (id === null) return this.warn(`ignored a mig-quiesce with a bad id (${JSON.stringify(p.mig ?? p.id)})`);
    if (this.mig?.id === id) return;  // a repeat
    const refuse = (code: string, message: string): void => {
      this.link?.send('mig-failed', { mig: id, error: { code, message } });
      this.emit({ event: 'failed', mig: id, code, message });
    };
    if (this.mig) return refuse('EDVSBUSY', `migration ${this.mig.id} of this service is in progress`);
    if (this.state !== 'serving') return refuse('EDVSBUSY', `the service is not serving yet (${this.state})`);
    if (this.stopRequested) return refuse('EDVSPROCSTS', 'the service is stopping');
    const fences = p.fences ?? [];
    if (!Array.isArray(fences) || fences.length > 1024 || !fences.every((n) => Number.isInteger(n) && n >= 0 && n <= 1023))
      return refuse('EDVSINVAL', 'mig-quiesce: fences must be an array of node numbers');
    const t = p.timeoutMs ?? DEFAULT_QUIESCE_MS;
    if (!Number.isInteger(t) || (t as number) < 1 || (t as number) > 600000) return refuse('EDVSINVAL', 'mig-quiesce: timeoutMs must be an integer in [1, 600000]');
    const mig: Migration = { id, t0: performance.now(), need: [...new Set(fences as number[])], timer: null, file: null };
    mig.timer = setTimeout(() => {
      const missing = mig.need.filter((n) => !this.fences.get(id)?.has(n));
      this.failQuiesce(
        mig,
        new DvsError(
          'EDVSTIMEDOUT',
          missing.length ? `quiesce: no fence from node(s) ${missing.join(', ')} within ${t} ms` : `quiesce: the service did not reach a message boundary (or snapshot) within ${t} ms`,
        ),
      );
    }, t as number);
    this.mig = mig;
    // What a rollback left to handle is older than anything in the mailbox: it goes first into the image.
    this.kept = this.backlog.splice(0);
    this.state = 'draining';
    this.wake();
  }

  private fencesDone(): boolean {
    const got = this.fences.get(this.mig!.id);
    return this.mig!.need.every((n) => got?.has(n));
  }

  private noteFence(node: number, token: number): void {
    let s = this.fences.get(token);
    if (!s) {
      if (this.fences.size >= MAX_FENCE_TOKENS) this.fences.delete(this.fences.keys().next().value!);
      this.fences.set(token, (s = new Set()));
    }
    s.add(node);
  }

  /** Every fence is in: take what the mailbox already holds, snapshot, write the image, tell the agent. */
  private async finishDrain(): Promise<void> {
    const mig = this.mig!;
    const ep = this.ep!;
    for (;;) {
      let m: Message;
      try {
        m = await ep.receive({ timeoutMs: 0 });
      } catch (e) {
        if (codeOf(e) === 'EDVSAGAIN') break;
        throw e;
      }
      if (m.kind === 'fence') this.noteFence(m.srcNode, m.bits);
      if (m.kind === 'fence' || this.isKick(m)) m.release();
      else this.keep(m);
    }
    const t1 = performance.now();
    let t2 = t1;
    let state: Uint8Array | null = null;
    let bytes: number;
    const file = join(IMAGE_DIR, `dvs-image-${process.pid}-${this.dc}-${this.epNum}-${mig.id}.img`);
    try {
      if (this.mod.snapshot) {
        let r: unknown = this.mod.snapshot();
        if (isThenable(r)) r = await r;
        if (this.mig !== mig) return;  // timed out or rolled back meanwhile
        state = snapshotBytes(r);
      }
      t2 = performance.now();
      bytes = writeImageFile(file, { id: mig.id, ...this.identity(), state, messages: this.kept });
    } catch (e) {
      if (this.mig === mig) this.failQuiesce(mig, e);
      return;
    }
    if (this.mig !== mig) {
      removeFile(file);
      return;
    }
    mig.file = file;
    if (mig.timer) clearTimeout(mig.timer);
    mig.timer = null;
    this.state = 'quiesced';
    const calls = this.kept.filter((k) => k.kind === 'call').map((k) => [k.srcNode, k.src, k.srcGen, k.callId]);
    this.link?.send('mig-image', { mig: mig.id, file, bytes, messages: this.kept.length, calls });
    const ms = { drain: round(t1 - mig.t0), snapshot: round(t2 - t1), write: round(performance.now() - t2) };
    this.emit({ event: 'quiesced', mig: mig.id, messages: this.kept.length, stateBytes: state?.byteLength ?? 0, imageBytes: bytes, file, ms });
  }

  /** The quiesce failed (timeout, snapshot threw, …): tell the agent, and resume by ourselves. */
  private failQuiesce(mig: Migration, e: unknown): void {
    if (this.mig !== mig || this.state !== 'draining') return;
    const code = codeOf(e);
    const message = messageOf(e);
    this.link?.send('mig-failed', { mig: mig.id, error: { code, message } });
    this.emit({ event: 'failed', mig: mig.id, code, message });
    this.endMigration();
  }

  /** Back to serving: the kept messages first, in order. */
  private endMigration(): void {
    const mig = this.mig;
    if (!mig) return;
    if (mig.timer) clearTimeout(mig.timer);
    if (mig.file) removeFile(mig.file);
    this.fences.delete(mig.id);
    this.mig = null;
    this.backlog = this.kept.concat(this.backlog);
    this.kept = [];
    this.state = 'serving';
    this.wake();
  }

  private onResume(p: Push): void {
    const id = pushId(p);
    if (id === null || this.mig?.id !== id) return;  // unknown, or already resumed by ourselves (after mig-failed)
    if (this.state !== 'draining' && this.state !== 'quiesced') return;
    const n = this.kept.length;
    this.endMigration();
    this.emit({ event: 'resumed', mig: id, messages: n });
  }

  private onDetached(p: Push): void {
    const id = pushId(p);
    const mig = this.mig;
    if (id === null || mig?.id !== id || this.state !== 'quiesced') {
      this.warn(`ignored mig-detached ${JSON.stringify(p.mig ?? p.id)} (state ${this.state}${mig ? `, migration ${mig.id}` : ''})`);
      return;
    }
    // The endpoint now belongs to the agent (a proxy to the destination): exit without unbinding.
    if (mig.file) removeFile(mig.file);
    mig.file = null;
    this.emit({ event: 'detached', mig: id });
    this.state = 'ended';
    this.finish(0);
  }

  // ------------------------------------------------------------ migration: destination

  private onAdopt(p: Push): void {
    const id = pushId(p);
    const img = this.image;
    if (id === null || this.state !== 'restoring' || img?.id !== id) {
      this.warn(`ignored mig-adopt ${JSON.stringify(p.mig ?? p.id)} (state ${this.state})`);
      return;
    }
    const t0 = performance.now();
    try {
      this.ep = this.node.adopt(this.dc, this.epNum);
      this.adoptMs = [t0, performance.now()];
    } catch (e) {
      this.link?.send('mig-failed', { mig: id, error: { code: codeOf(e), message: `adopt: ${messageOf(e)}` } });
      throw e;
    }
    this.backlog = img.messages.slice();
    this.state = 'adopting';
    this.wake();
  }

  /** Standby: the image is there. */
  private onRestore(p: Push): void {
    const id = pushId(p);
    if (this.state !== 'standby') return this.warn(`ignored mig-restore ${JSON.stringify(p.mig ?? p.id)} (state ${this.state})`);
    const file = p.file;
    void (async () => {
      if (id === null || typeof file !== 'string') throw new DvsError('EDVSINVAL', 'mig-restore needs mig and file');
      this.state = 'starting';
      let img: ServiceImage;
      let readMs = 0;
      try {
        const t0 = performance.now();
        img = readImage(file, this.dc, this.epNum, this.moduleAbs, this.scratch);
        readMs = performance.now() - t0;
        if (img.id !== id) throw new DvsError('EDVSINVAL', `the image is of migration ${img.id}, not ${id}`);
      } catch (e) {
        this.link?.send('mig-failed', { mig: id, error: { code: codeOf(e), message: messageOf(e) } });
        throw e;
      }
      await this.restoreImage(img, readMs);
    })().catch((e: unknown) => this.fail(e instanceof Error ? e : new Error(String(e))));
  }

  /** The migration this process was started for is rolled back: it has nothing to serve. */
  private onAbort(p: Push): void {
    const s = this.state;
    if (s !== 'standby' && s !== 'starting' && s !== 'restoring') return this.warn(`ignored mig-abort ${JSON.stringify(p.mig ?? p.id)} (state ${s})`);
    this.warn(`migration ${JSON.stringify(p.mig ?? p.id)} rolled back (mig-abort): exiting`);
    this.finish(1);
  }

  /** The image's messages are answered: serving. */
  private adopted(): void {
    this.link?.send('mig-serving', { mig: this.image!.id, dc: this.dc, ep: this.epNum, pid: process.pid });
    this.state = 'serving';
    this.announce(true);
  }

  private onLinkClosed(err: DvsError): void {
    const s = this.state;
    this.link = null;
    if (s === 'ended') return;
    if (s !== 'serving' && s !== 'draining') {
      // Whether the migration commits is now the orchestrator's call: never serve twice.
      this.fail(new DvsError('EDVSNOTCONN', `the agent connection closed while ${s === 'quiesced' ? 'quiesced (image sent)' : `a migration's destination (${s})`}: ${messageOf(err)}`));
      return;
    }
    this.warn(`the agent connection closed (${messageOf(err)}): serving on, without migration support`);
    if (s === 'draining' && this.mig) {
      this.emit({ event: 'failed', mig: this.mig.id, code: 'EDVSNOTCONN', message: 'the agent connection closed' });
      this.endMigration();
    }
  }

  // ------------------------------------------------------------ the end

  private finish(code: number): void {
    if (this.finished) return;
    this.finished = true;
    const stopped = this.state !== 'ended';
    this.state = 'ended';
    void this.settleLink().then(() => {
      this.teardown();
      if (stopped && this.stopRequested) this.emit({ event: 'stopped' });
      this.resolveDone(code);
    });
  }

  private fail(e: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.state = 'ended';
    void this.settleLink().then(() => {
      this.teardown();
      this.rejectDone(e);
    });
  }

  /** Lines to the agent still unanswered (a mig-failed, a mig-serving…) get a moment to arrive before the process goes. */
  private settleLink(): Promise<void> {
    return this.link ? this.link.settled(LINGER_MS) : Promise.resolve();
  }

  /** Releases everything this process holds (a detached endpoint's close leaves its slot alone). */
  private teardown(): void {
    this.state = 'ended';
    if (this.keeper) clearInterval(this.keeper);
    this.keeper = null;
    if (this.mig?.timer) clearTimeout(this.mig.timer);
    if (this.mig?.file) removeFile(this.mig.file);
    this.link?.close();
    this.link = null;
    this.wake();
    this.node.detach();
  }
}

function removeFile(f: string): void {
  try {
    unlinkSync(f);
  } catch {
    /* already gone (the agent may remove it after reading) */
  }
}
