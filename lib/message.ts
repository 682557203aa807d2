// message.ts — a received message: its payload is a view into shared memory,
// valid until release().
import { DvsError } from './errors.js';
import type { Endpoint } from './endpoint.js';
import { Kind } from './native.js';
import type { Payload } from './validate.js';

/**
 * 'fence' is a migration marker (docs/DESIGN.md "Migration"): only an
 * endpoint being migrated receives one; `srcNode` is the node that sent it
 * and `bits` its token.
 */
export type MessageKind = 'send' | 'call' | 'reply' | 'notify' | 'fence';
const kindNames: MessageKind[] = ['send', 'send', 'call', 'reply', 'notify', 'send', 'fence'];

/** Where the reply to a call goes: enough to answer it later, from any process serving the same endpoint on any node. */
export interface ReplyTarget {
  readonly dc: number;
  /** The caller's endpoint, its incarnation, its node. */
  readonly ep: number;
  readonly gen: number;
  readonly node: number;
  readonly callId: number;
}
const decoder = new TextDecoder();
const EMPTY = new Uint8Array(0);

export class Message {
  /** @internal */ _view: Uint8Array | null = null;
  /** @internal */ _released = false;
  /** @internal */ _replied = false;

  /** @internal */
  constructor(
    /** @internal */ readonly _ep: Endpoint,
    /** @internal */ readonly _kind: number,
    /** Endpoint number of the sender (in the receiver's DC). */
    readonly src: number,
    /** Node the sender was on. */
    readonly srcNode: number,
    /** @internal */ readonly _off: number,
    /** Payload length in bytes. */
    readonly length: number,
    /** @internal */ readonly _block: number,
    /** @internal */ readonly _callId: number,
    /** @internal */ readonly _srcGen: number,
    /** Notification bits (kind 'notify'). */
    readonly bits: number,
  ) {}

  get kind(): MessageKind {
    return kindNames[this._kind] ?? 'send';
  }

  /** DC of the message (always the receiving endpoint's). */
  get dc(): number {
    return this._ep.dc;
  }

  /** The payload, read in place in shared memory; valid until release(). */
  get payload(): Uint8Array {
    if (this._released) throw new DvsError('EDVSPROCSTS', 'message payload used after release()');
    if (this._view === null)
      this._view = this.length === 0 ? EMPTY : new Uint8Array(this._ep.node._ab, this._off, this.length);
    return this._view;
  }

  /** The payload decoded as UTF-8. */
  text(): string {
    return decoder.decode(this.payload);
  }

  /** A call's reply target (for `endpoint.replyTo`, e.g. after the call was handed to another process); null for other kinds. */
  get replyTarget(): ReplyTarget | null {
    if (this._kind !== Kind.Call) return null;
    return { dc: this._ep.dc, ep: this.src, gen: this._srcGen, node: this.srcNode, callId: this._callId };
  }

  /** Whether this is a call still waiting for its reply. */
  get needsReply(): boolean {
    return this._kind === Kind.Call && !this._replied;
  }

  /**
   * Answers a call; never blocks. Throws EDVSPROCSTS if the caller's endpoint is
   * gone (closed, died, rebound) or the call was answered already. A caller that
   * gave up (timed out) discards a late reply.
   */
  reply(payload?: Payload): void {
    if (this._kind !== Kind.Call) throw new DvsError('EDVSPROCSTS', `cannot reply to a '${this.kind}' message`);
    if (this._replied) throw new DvsError('EDVSPROCSTS', 'this call has been replied to already');
    this._ep._reply(this, payload);
    this._replied = true;
  }

  /** Returns the payload's shared memory to the arena. Idempotent. */
  release(): void {
    if (this._released) return;
    this._released = true;
    this._view = null;
    if (this._block >= 0) this._ep.node._release(this._block);
  }
}

/** The reply to a call (kind 'reply'). */
export type Reply = Message;
