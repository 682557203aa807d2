// endpoint.ts — a bound endpoint: send / call / receive / notify, with
// asynchronous waiting wired into the event loop (doorbell + libuv) and
// synchronous spin variants for latency-critical loops.
import { DvsError, codes } from './errors.js';
import { Message, type ReplyTarget } from './message.js';
import { Desc, Kind, layout } from './native.js';
import type { Node } from './node.js';
import {
  ANY,
  MAX_PAYLOAD,
  checkAddress,
  checkBits,
  checkPayload,
  checkSource,
  checkTimeout,
  type Address,
  type Payload,
  checkDc,
  checkEp,
  checkNode,
} from './validate.js';

const EAGAIN = codes.EDVSAGAIN;
const EDSTDIED = codes.EDVSDSTDIED;
const RESOLVED: Promise<void> = Promise.resolve();
/** The core's WaitReason for "out of reply/acknowledgement credits" (native/core/node.h kWaitCredits). */
const WAIT_CREDITS = 3;
const encoder = new TextEncoder();
const noop = (): void => {};

export interface TimeoutOptions {
  /** Milliseconds; undefined = no limit; 0 = do not wait (EDVSAGAIN). */
  timeoutMs?: number;
}
export interface ReceiveOptions extends TimeoutOptions {
  /** Only messages from this endpoint (default: any). */
  from?: number;
}
export interface SyncOptions extends TimeoutOptions {
  /** Busy-poll this long before sleeping; default adaptive (grows while it pays off, bounded). */
  spinUs?: number;
}

interface Receiver {
  from: number;
  resolve(m: Message): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
}
interface PendingCall {
  dst: number;
  gen: number;
  /** A send to a remote endpoint waiting for its node's acknowledgement (resolves with no message). */
  ack: boolean;
  resolve(m: Message | undefined): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
}
interface PendingSend {
  call: boolean;
  dst: number;
  args: Args;
  timeoutMs: number;
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
}

/**
 * Native payload arguments: (u8 to copy, -1, 0) or (null, offset of an allocated
 * block, length); the 4th element is true when the library allocated that block
 * itself (for a string) and must free it if the message is not sent.
 */
type Args = [Uint8Array | null, number, number, boolean];

export class Endpoint implements AsyncIterable<Message> {
  private recvQ: Message[] = [];
  private recvHead = 0;
  private receivers: Receiver[] = [];
  private calls = new Map<number, PendingCall>();
  private sends: PendingSend[] = [];
  private closed = false;
  private scheduled = false;
  private failedAsync = 0;

  /** @internal */
  constructor(
    readonly node: Node,
    /** @internal */ readonly _h: number,
    readonly dc: number,
    readonly ep: number,
  ) {}

  get isClosed(): boolean {
    return this.closed;
  }

  // ---------------------------------------------------------------- send

  /**
   * Sends a one-way message. Resolves when the destination's node has accepted
   * it into the destination mailbox; waits (asynchronously) while the mailbox
   * or the arena is full, or rejects with EDVSAGAIN when `timeoutMs` is 0.
   * A Uint8Array payload is copied once into shared memory (when accepted);
   * one from `alloc()` is published without copying.
   */
  send(dst: Address, payload?: Payload, opts?: TimeoutOptions): Promise<void> {
    try {
      const d = checkAddress(dst, this.dc);
      const p = checkPayload(payload);
      const t = checkTimeout(opts?.timeoutMs);
      this.checkOpen();
      if (this.sends.length === 0 && this.plainCopy(p)) {
        // Common case without bookkeeping: a caller's buffer, copied once.
        const r = this.node._native.send(this._h, d, p, -1, 0);
        if (r === 0) return RESOLVED;
        if (r > 0) return this.awaitAck(d, r, t);
        if (r !== EAGAIN || t === 0) return Promise.reject(this.err(r));
      }
      const args = this.args(p);
      if (this.sends.length === 0) {
        const r = this.node._native.send(this._h, d, args[0], args[1], args[2]);
        if (r === 0) return this.sent(args);
        if (r > 0) {
          this.sent(args);
          return this.awaitAck(d, r, t);
        }
        if (r !== EAGAIN || t === 0) return this.failArgs(args, r, true);
      } else if (t === 0) {
        return this.failArgs(args, EAGAIN, false);
      }
      return new Promise<void>((resolve, reject) => this.queue(false, d, args, t, resolve as (v: unknown) => void, reject));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Sends without waiting: false when it would have to wait (back-pressure), throws on errors. */
  trySend(dst: Address, payload?: Payload): boolean {
    const d = checkAddress(dst, this.dc);
    const p = checkPayload(payload);
    this.checkOpen();
    if (this.sends.length) return false;
    if (this.plainCopy(p)) {
      const r = this.node._native.send(this._h, d, p, -1, 0);
      if (r >= 0) return this.accepted(d, r);
      if (r === EAGAIN) return false;
      throw this.err(r);
    }
    const args = this.args(p);
    const r = this.node._native.send(this._h, d, args[0], args[1], args[2]);
    if (r >= 0) {
      this.sent(args);
      return this.accepted(d, r);
    }
    this.failed(args);
    if (r === EAGAIN) return false;
    throw this.err(r);
  }

  /**
   * Asynchronous sends to remote endpoints whose destination node refused them
   * (after trySend() returned true); see trySend().
   */
  get failedSends(): number {
    return this.failedAsync;
  }

  /** Blocking send (the thread waits); for synchronous programs and benchmarks. */
  sendSync(dst: Address, payload?: Payload, opts?: TimeoutOptions): void {
    const d = checkAddress(dst, this.dc);
    const p = checkPayload(payload);
    const t = checkTimeout(opts?.timeoutMs);
    this.checkOpen();
    if (this.sends.length) throw new DvsError('EDVSBUSY', 'asynchronous sends are pending on this endpoint');
    const args = this.args(p);
    const r = this.node._native.sendSync(this._h, d, args[0], args[1], args[2], t);
    if (r !== 0) {
      this.failed(args);
      throw this.err(r);
    }
    this.sent(args);
  }

  /** A writable buffer in shared memory; pass it to send()/call()/reply() to publish it without a copy. */
  alloc(size: number): Uint8Array {
    this.checkOpen();
    if (!Number.isInteger(size) || size < 0) throw new DvsError('EDVSINVAL', `alloc size must be an integer >= 0, got ${size}`);
    if (size > MAX_PAYLOAD) throw new DvsError('EDVS2BIG', `alloc of ${size} bytes; the limit is 1 MiB`);
    const native = this.node._native;
    const r = native.alloc(this._h, size);
    if (r !== 0) throw this.err(r, r === EAGAIN ? 'the arena has no free block of that size' : undefined);
    const s = this.node._scratch;
    const off = (s[layout.outOffLo] >>> 0) + (s[layout.outOffHi] >>> 0) * 0x100000000;
    this.node._allocs.add(off);
    return new Uint8Array(this.node._ab, off, size);
  }

  /** Gives back a buffer from alloc() that will not be sent. */
  free(buf: Uint8Array): void {
    if (!(buf instanceof Uint8Array) || buf.buffer !== this.node._ab || !this.node._allocs.has(buf.byteOffset))
      throw new DvsError('EDVSINVAL', 'not a buffer from alloc() (or already sent/freed)');
    this.node._freeAlloc(buf.byteOffset);
  }

  // ---------------------------------------------------------------- call

  /** sendrec: sends a request and resolves with the reply (release it when done). */
  call(dst: Address, payload?: Payload, opts?: TimeoutOptions): Promise<Message> {
    try {
      const d = checkAddress(dst, this.dc);
      const p = checkPayload(payload);
      const t = checkTimeout(opts?.timeoutMs);
      this.checkOpen();
      const args = this.args(p);
      if (this.sends.length === 0) {
        const r = this.node._native.call(this._h, d, args[0], args[1], args[2]);
        if (r === 0 || r === EDSTDIED) {
          this.sent(args);
          return this.awaitReply(d, t);
        }
        if (r !== EAGAIN || t === 0) return this.failArgs(args, r, true) as unknown as Promise<Message>;
      } else if (t === 0) {
        return this.failArgs(args, EAGAIN, false) as unknown as Promise<Message>;
      }
      return new Promise<Message>((resolve, reject) => this.queue(true, d, args, t, resolve as (v: unknown) => void, reject));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Blocking call: the thread spins, then sleeps, until the reply arrives. */
  callSync(dst: Address, payload?: Payload, opts?: SyncOptions): Message {
    const d = checkAddress(dst, this.dc);
    const p = checkPayload(payload);
    const t = checkTimeout(opts?.timeoutMs);
    const spin = spinNs(opts?.spinUs);
    this.checkOpen();
    if (this.calls.size || this.sends.length)
      throw new DvsError('EDVSBUSY', 'asynchronous calls or sends are pending on this endpoint');
    const args = this.args(p);
    const r = this.node._native.callSync(this._h, d, args[0], args[1], args[2], t, spin);
    if (r < 0) {
      this.failed(args);
      throw this.err(r);
    }
    this.sent(args);
    return this.replyFromDesc(0);
  }

  // ---------------------------------------------------------------- receive

  /** Receives the next message (notifications first); `from` restricts the source. */
  receive(opts?: ReceiveOptions): Promise<Message> {
    try {
      const from = checkSource(opts?.from);
      const t = checkTimeout(opts?.timeoutMs);
      this.checkOpen();
      if (this.receivers.length === 0) {
        const m = this.take(from);
        if (m) return Promise.resolve(m);
      }
      if (t === 0) return Promise.reject(new DvsError('EDVSAGAIN', 'no message'));
      return new Promise<Message>((resolve, reject) => {
        const r: Receiver = { from, resolve, reject };
        if (t > 0) r.timer = setTimeout(() => this.expireReceiver(r), t);
        this.receivers.push(r);
        this.node._waitInc();
        this.armSoon();
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Blocking receive: the thread spins, then sleeps, until a message arrives. */
  receiveSync(opts?: ReceiveOptions & SyncOptions): Message {
    const from = checkSource(opts?.from);
    const t = checkTimeout(opts?.timeoutMs);
    const spin = spinNs(opts?.spinUs);
    this.checkOpen();
    if (this.receivers.length) throw new DvsError('EDVSBUSY', 'asynchronous receives are pending on this endpoint');
    const q = this.takeQueued(from);
    if (q) return q;
    const n = this.node._releasePending();
    const r = n ? this.node._native.receive(this._h, from, 1, n) : 0;
    if (r === 1) return this.msgFromDesc(0);
    const s = this.node._native.receiveSync(this._h, from, t, spin);
    if (s < 0) throw this.err(s);
    return this.msgFromDesc(0);
  }

  /** Messages as they arrive; each is released when the loop advances. Ends when the endpoint closes. */
  [Symbol.asyncIterator](): AsyncIterator<Message> {
    let prev: Message | null = null;
    const done: IteratorReturnResult<undefined> = { done: true, value: undefined };
    const onErr = (e: unknown): IteratorResult<Message> => {
      if (this.closed) return done;
      throw e;
    };
    return {
      next: (): Promise<IteratorResult<Message>> => {
        if (prev) prev.release();
        prev = null;
        if (this.closed) return Promise.resolve(done);
        if (this.receivers.length === 0) {
          const m = this.take(ANY);
          if (m) {
            prev = m;
            return Promise.resolve({ done: false, value: m });
          }
        }
        return this.receive().then((m) => {
          prev = m;
          return { done: false, value: m };
        }, onErr);
      },
      return: (): Promise<IteratorResult<Message>> => {
        if (prev) prev.release();
        prev = null;
        return Promise.resolve(done);
      },
    };
  }

  // ---------------------------------------------------------------- notify, close

  /** ORs `bits` into the destination's pending notification from this endpoint; never blocks. */
  notify(dst: Address, bits: number): void {
    const d = checkAddress(dst, this.dc);
    const b = checkBits(bits);
    this.checkOpen();
    const r = this.node._native.notify(this._h, d, b);
    if (r !== 0) throw this.err(r);
  }

  /** Unbinds: pending operations reject with EDVSNOTBIND, queued messages are freed, callers of this endpoint get EDVSDSTDIED. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const err = () => new DvsError('EDVSNOTBIND', `endpoint ${this.ep} was closed`);
    const pending = this.receivers.length + this.calls.size + this.sends.length;
    for (const r of this.receivers.splice(0)) this.settle(r.timer, () => r.reject(err()));
    for (const [, c] of this.calls) this.settle(c.timer, () => c.reject(err()));
    this.calls.clear();
    for (const s of this.sends.splice(0)) {
      this.dropArgs(s.args);
      this.settle(s.timer, () => s.reject(err()));
    }
    for (let i = 0; i < pending; i++) this.node._waitDec();
    for (let i = this.recvHead; i < this.recvQ.length; i++) this.recvQ[i].release();
    this.recvQ = [];
    this.recvHead = 0;
    this.node._closed(this);
  }

  // ---------------------------------------------------------------- internals

  /** @internal Called by Message.reply(). */
  /**
   * Answers a call by its reply target (`message.replyTarget`), e.g. a call
   * received by another process serving this endpoint before it migrated
   * here. EDVSPROCSTS if that caller no longer waits for it.
   */
  replyTo(target: ReplyTarget, payload?: Payload): void {
    if (target === null || typeof target !== 'object') throw new DvsError('EDVSINVAL', 'replyTo needs a reply target ({ dc, ep, gen, node, callId })');
    const { dc, ep, gen, node, callId } = target;
    if (checkDc(dc) !== this.dc) throw new DvsError('EDVSBADDCID', `the call is for DC ${dc}; this endpoint is in DC ${this.dc}`);
    checkEp(ep);
    checkNode(node);
    for (const [k, v] of [['gen', gen], ['callId', callId]] as const)
      if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new DvsError('EDVSINVAL', `reply target ${k} must be a u32, got ${String(v)}`);
    const p = checkPayload(payload);
    this.checkOpen();
    const args = this.args(p);
    const r = this.node._native.reply(this._h, this.dc, ep, gen, callId, args[0], args[1], args[2], node);
    if (r !== 0) {
      this.failed(args);
      throw this.err(r, r === codes.EDVSPROCSTS ? `endpoint ${ep} is no longer waiting for this reply` : undefined);
    }
    this.sent(args);
  }

  _reply(m: Message, payload: Payload): void {
    const p = checkPayload(payload);
    this.checkOpen();
    const args = this.args(p);
    const r = this.node._native.reply(this._h, this.dc, m.src, m._srcGen, m._callId, args[0], args[1], args[2], m.srcNode);
    if (r !== 0) {
      this.failed(args);
      throw this.err(r, r === codes.EDVSPROCSTS ? `endpoint ${m.src} is no longer waiting for this reply` : undefined);
    }
    this.sent(args);
  }

  /** @internal True while something waits on this endpoint. */
  _waiting(): boolean {
    return this.receivers.length > 0 || this.calls.size > 0 || this.sends.length > 0;
  }

  /** @internal Serves waiters from what has arrived (on a doorbell or after arming). */
  _pump(): void {
    this.scheduled = false;
    if (this.closed) return;
    const native = this.node._native;
    for (let round = 0; round < 64; round++) {
      let progress = false;
      if (this.calls.size) progress = this.drainReplies() || progress;
      if (this.receivers.length) progress = this.serveReceivers() || progress;
      if (this.sends.length) progress = this.flushSends() || progress;
      if (this.closed || !this._waiting()) return;
      if (!progress) {
        if ((this.calls.size || this.receivers.length) && native.arm(this._h) === 1) continue;
        return;
      }
    }
    this.scheduled = true;
    setImmediate(() => this._pump());
  }

  /** @internal Periodic check (node timer): callers and senders of dead or rebound destinations fail. */
  _checkPeers(): void {
    if (this.closed) return;
    const native = this.node._native;
    const verdicts = new Map<string, number>();
    const verdict = (dst: number, gen: number): number => {
      const k = `${dst}/${gen}`;
      let v = verdicts.get(k);
      if (v === undefined) verdicts.set(k, (v = native.verify(this._h, dst, gen)));
      return v;
    };
    for (const [id, c] of [...this.calls]) {
      const v = verdict(c.dst, c.gen);
      if (v === 0) continue;
      this.drainReplies();  // its reply (or error reply) may be there already
      if (this.calls.has(id)) this.abandonCall(id, this.err(v, v === EDSTDIED ? `endpoint ${c.dst} died` : undefined));
    }
    for (let i = 0; i < this.sends.length; i++) {
      const s = this.sends[i];
      const v = verdict(s.dst, 0);
      if (v !== 0) {
        this.sends.splice(i--, 1);
        this.dropArgs(s.args);
        this.node._waitDec();
        this.settle(s.timer, () => s.reject(this.err(v)));
      }
    }
    if (this._waiting()) this._pump();
  }

  private checkOpen(): void {
    if (this.closed) throw new DvsError('EDVSNOTBIND', `endpoint ${this.ep} is closed`);
  }

  private err(r: number, detail?: string): DvsError {
    return new DvsError(r, detail);
  }

  private settle(timer: NodeJS.Timeout | undefined, f: () => void): void {
    if (timer) clearTimeout(timer);
    f();
  }

  private armSoon(): void {
    if (this.scheduled) return;
    if (this.node._native.arm(this._h) === 1) {
      this.scheduled = true;
      queueMicrotask(() => this._pump());
    }
  }

  /** A caller's Uint8Array outside the arena (copied by native code), with nothing to flush first. */
  private plainCopy(p: Uint8Array | string | null): p is Uint8Array {
    return p !== null && typeof p !== 'string' && p.buffer !== this.node._ab && this.node._noPendingReleases();
  }

  private args(p: Uint8Array | string | null): Args {
    const node = this.node;
    node._flushReleases();  // our own released blocks must be free before we allocate
    if (p === null) return [null, -1, 0, false];
    if (typeof p === 'string') {
      const len = Buffer.byteLength(p);
      if (len > MAX_PAYLOAD) throw new DvsError('EDVS2BIG', `payload is ${len} bytes; the limit is 1 MiB`);
      if (len === 0) return [null, -1, 0, false];
      if (node._native.alloc(this._h, len) !== 0) return [Buffer.from(p), -1, 0, false];
      const s = node._scratch;
      const off = (s[layout.outOffLo] >>> 0) + (s[layout.outOffHi] >>> 0) * 0x100000000;
      encoder.encodeInto(p, new Uint8Array(node._ab, off, len));
      node._allocs.add(off);
      return [null, off, len, true];
    }
    if (p.buffer === node._ab && node._allocs.has(p.byteOffset)) return [null, p.byteOffset, p.byteLength, false];
    return [p, -1, 0, false];
  }

  /** Bookkeeping after the core took ownership of an allocated block. */
  private sent(args: Args): Promise<void> {
    if (args[0] === null && args[1] >= 0) this.node._allocs.delete(args[1]);
    return RESOLVED;
  }

  /** Frees a block we allocated for a string payload (user allocs stay theirs). */
  private dropArgs(args: Args): void {
    if (args[3]) this.node._freeAlloc(args[1]);
  }

  /** After a native op failed: the core may have taken the block anyway (e.g. a call sent, then its wait failed). */
  private failed(args: Args): void {
    if (args[1] >= 0 && this.node._scratch[layout.outTaken] === 1) this.node._allocs.delete(args[1]);
    else this.dropArgs(args);
  }

  private failArgs(args: Args, r: number, attempted: boolean): Promise<void> {
    if (attempted) this.failed(args);
    else this.dropArgs(args);
    return Promise.reject(this.err(r));
  }

  private queue(call: boolean, dst: number, args: Args, t: number, resolve: (v: unknown) => void, reject: (e: Error) => void): void {
    const s: PendingSend = { call, dst, args, timeoutMs: t, resolve, reject };
    if (t > 0)
      s.timer = setTimeout(() => {
        const i = this.sends.indexOf(s);
        if (i < 0) return;
        this.sends.splice(i, 1);
        this.node._waitDec();
        this.dropArgs(s.args);
        s.reject(new DvsError('EDVSTIMEDOUT', `${call ? 'call' : 'send'} to endpoint ${dst} could not be delivered in ${t} ms`));
      }, t);
    this.sends.push(s);
    this.node._waitInc();
    if (this.sends.length === 1) {
      const why = this.node._scratch[layout.outWhy];
      if ((why === WAIT_CREDITS || this.node._native.armSpace(this._h, dst, why) === 1) && !this.scheduled) {
        this.scheduled = true;
        queueMicrotask(() => this._pump());
      }
    }
  }

  private flushSends(): boolean {
    const native = this.node._native;
    let any = false;
    for (let tries = 0; this.sends.length && tries < 1024; tries++) {
      const s = this.sends[0];
      const [u8, off, len] = s.args;
      const r = s.call ? native.call(this._h, s.dst, u8, off, len) : native.send(this._h, s.dst, u8, off, len);
      if (r === EAGAIN) {
        const why = this.node._scratch[layout.outWhy];
        // Out of acknowledgement credits: replies free them, and _pump waits for those.
        if (why === WAIT_CREDITS) return any;
        if (native.armSpace(this._h, s.dst, why) === 1) continue;
        return any;
      }
      this.sends.shift();
      this.node._waitDec();
      if (s.timer) clearTimeout(s.timer);
      any = true;
      const args = s.args;
      if (r === 0 || r > 0 || (s.call && r === EDSTDIED)) {
        this.sent(args);
        if (s.call) this.awaitReply(s.dst, s.timeoutMs).then(s.resolve, s.reject);
        else if (r > 0) this.awaitAck(s.dst, r, s.timeoutMs).then(s.resolve, s.reject);
        else s.resolve(undefined);
      } else {
        this.failed(args);
        s.reject(this.err(r));
      }
    }
    return any;
  }

  /** trySend() accepted a message: a remote one is settled later (its failures are counted in failedSends). */
  private accepted(dst: number, r: number): true {
    if (r > 0) {
      // No promise or object per message: one immutable record per destination
      // incarnation, shared by its in-flight sends; a failure only counts.
      const gen = this.node._scratch[layout.outDstGen] >>> 0;
      let rec = this.tryRecord;
      if (rec === null || rec.dst !== dst || rec.gen !== gen)
        rec = this.tryRecord = { dst, gen, ack: true, resolve: noop, reject: this.countFailure };
      this.calls.set(r, rec);
      this.node._waitInc();
      if (this.calls.size === 1) this.armSoon();  // the bell stays armed until it rings; _pump re-arms
    }
    return true;
  }

  private tryRecord: PendingCall | null = null;

  private readonly countFailure = (): void => {
    this.failedAsync++;
  };

  /** A send to a remote endpoint completes when its node acknowledges it (an empty reply to id). */
  private awaitAck(dst: number, id: number, t: number): Promise<void> {
    const gen = this.node._scratch[layout.outDstGen] >>> 0;  // the proxy's incarnation (set by send)
    return this.awaitReply(dst, t, id, gen, true) as Promise<unknown> as Promise<void>;
  }

  private awaitReply(
    dst: number,
    t: number,
    id = this.node._scratch[layout.outCallId],
    gen = this.node._scratch[layout.outDstGen] >>> 0,
    ack = false,
  ): Promise<Message> {
    return new Promise<Message>((resolve, reject) => {
      const c: PendingCall = { dst, gen, ack, resolve: resolve as (m: Message | undefined) => void, reject };
      this.calls.set(id, c);
      this.node._waitInc();
      if (t === 0) {
        this.drainReplies();
        if (this.calls.has(id)) this.abandonCall(id, new DvsError('EDVSAGAIN', 'the reply is not there yet'));
        return;
      }
      if (t > 0)
        c.timer = setTimeout(
          () => this.abandonCall(id, new DvsError('EDVSTIMEDOUT', `no reply from endpoint ${dst} within ${t} ms`)),
          t,
        );
      this.armSoon();
    });
  }

  private abandonCall(id: number, e: Error): void {
    const c = this.calls.get(id);
    if (!c) return;
    this.calls.delete(id);
    if (c.ack) this.node._native.callEnd(this._h, 0, 1);
    else this.node._native.callEnd(this._h);
    this.node._waitDec();
    this.settle(c.timer, () => c.reject(e));
  }

  /**
   * Settles calls and remote sends from the reply ring. An acknowledgement
   * cell covers `bits` consecutive ids (many sends, one cell); ids nobody
   * waits for any more (abandoned) are skipped, their credit already returned.
   */
  private drainReplies(): boolean {
    const native = this.node._native;
    const s = this.node._scratch;
    let any = false;
    for (;;) {
      const n = native.replies(this._h, layout.maxBatch);
      if (n <= 0) return any;
      let calls = 0;
      let acks = 0;
      for (let i = 0; i < n; i++) {
        const base = layout.msgBase + i * layout.msgInts;
        const first = s[base + Desc.CallId];
        const count = s[base + Desc.Kind] === Kind.Reply ? Math.max(1, s[base + Desc.Bits] >>> 0) : 1;
        const status = s[base + Desc.Status];
        let kept = false;
        for (let k = 0; k < count; k++) {
          const id = first + k;
          const c = this.calls.get(id);
          if (!c) continue;  // a late reply to an abandoned call
          this.calls.delete(id);
          if (c.ack) acks++;
          else calls++;
          this.node._waitDec();
          if (c.timer) clearTimeout(c.timer);
          any = true;
          if (status !== 0) c.reject(this.err(status, status === EDSTDIED ? `endpoint ${c.dst} died before replying` : undefined));
          else if (c.ack) c.resolve(undefined);
          else {
            kept = true;
            c.resolve(this.msgFromDesc(i));
          }
        }
        if (!kept && s[base + Desc.Block] >= 0) native.release(this._h, s[base + Desc.Block]);
      }
      if (calls || acks) native.callEnd(this._h, calls, acks);
      if (n < layout.maxBatch) return any;
    }
  }

  private serveReceivers(): boolean {
    let any = false;
    while (this.receivers.length) {
      const r = this.receivers[0];
      const m = this.take(r.from);
      if (!m) break;
      this.receivers.shift();
      this.node._waitDec();
      if (r.timer) clearTimeout(r.timer);
      r.resolve(m);
      any = true;
    }
    return any;
  }

  private expireReceiver(r: Receiver): void {
    const i = this.receivers.indexOf(r);
    if (i < 0) return;
    this.receivers.splice(i, 1);
    this.node._waitDec();
    r.reject(new DvsError('EDVSTIMEDOUT', 'no message arrived in time'));
  }

  /** A message for `from`: read-ahead queue first, then the mailbox (a batch for ANY). */
  private take(from: number): Message | null {
    const q = this.takeQueued(from);
    if (q) return q;
    const n = this.node._native.receive(this._h, from, from === ANY ? layout.maxBatch : 1, this.node._releasePending());
    if (n <= 0) {
      if (n < 0 && n !== EAGAIN) throw this.err(n);
      return null;
    }
    if (n === 1) return this.msgFromDesc(0);
    if (this.recvHead === this.recvQ.length) {
      this.recvQ.length = 0;
      this.recvHead = 0;
    }
    for (let i = 1; i < n; i++) this.recvQ.push(this.msgFromDesc(i));
    return this.msgFromDesc(0);
  }

  private takeQueued(from: number): Message | null {
    const q = this.recvQ;
    if (this.recvHead === q.length) return null;
    if (from === ANY) {
      const m = q[this.recvHead++];
      if (this.recvHead === q.length) {
        q.length = 0;
        this.recvHead = 0;
      }
      return m;
    }
    for (let i = this.recvHead; i < q.length; i++)
      if (q[i].src === from) {
        const m = q[i];
        q.splice(i, 1);
        return m;
      }
    return null;
  }

  private msgFromDesc(i: number): Message {
    const s = this.node._scratch;
    const b = layout.msgBase + i * layout.msgInts;
    return new Message(
      this,
      s[b + Desc.Kind],
      s[b + Desc.SrcEp],
      s[b + Desc.SrcNode],
      (s[b + Desc.OffLo] >>> 0) + (s[b + Desc.OffHi] >>> 0) * 0x100000000,
      s[b + Desc.Len],
      s[b + Desc.Block],
      s[b + Desc.CallId] >>> 0,
      s[b + Desc.SrcGen] >>> 0,
      s[b + Desc.Bits] >>> 0,
    );
  }

  private replyFromDesc(i: number): Message {
    const s = this.node._scratch;
    const b = layout.msgBase + i * layout.msgInts;
    const status = s[b + Desc.Status];
    if (status !== 0) {
      if (s[b + Desc.Block] >= 0) this.node._native.release(this._h, s[b + Desc.Block]);
      throw this.err(status);
    }
    return this.msgFromDesc(i);
  }
}

function spinNs(us: unknown): number {
  if (us === undefined) return -1;
  if (us === Infinity) return Number.MAX_SAFE_INTEGER;
  if (typeof us !== 'number' || Number.isNaN(us) || us < 0) throw new DvsError('EDVSINVAL', `spinUs must be a number >= 0`);
  return Math.round(us * 1000);
}

