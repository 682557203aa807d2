// membership.ts — who is in the cluster: the interface the agent uses, so that
// the embedded implementation (the agents themselves, over CONTROL frames) and
// a later etcd-backed one are interchangeable.
import { EventEmitter } from 'node:events';

export type MemberState = 'alive' | 'suspect' | 'dead' | 'left';

export interface Member {
  node: number;
  /** Transport address, 'ip:port'. */
  address: string;
  /** The member agent's incarnation (unique per start; a restart makes a higher one). */
  incarnation: number;
  state: MemberState;
}

/** The local member table at one moment; `number` increases by one on every change (per agent). */
export interface View {
  number: number;
  members: Member[];
}

export type MembershipEvents = {
  view: [View];
};

/** A small typed EventEmitter. */
export class TypedEmitter<E extends Record<string, unknown[]>> {
  private readonly ee = new EventEmitter();
  on<K extends keyof E & string>(event: K, f: (...args: E[K]) => void): this {
    this.ee.on(event, f as (...args: unknown[]) => void);
    return this;
  }
  once<K extends keyof E & string>(event: K, f: (...args: E[K]) => void): this {
    this.ee.once(event, f as (...args: unknown[]) => void);
    return this;
  }
  off<K extends keyof E & string>(event: K, f: (...args: E[K]) => void): this {
    this.ee.off(event, f as (...args: unknown[]) => void);
    return this;
  }
  protected emit<K extends keyof E & string>(event: K, ...args: E[K]): void {
    this.ee.emit(event, ...args);
  }
}

export interface Membership extends TypedEmitter<MembershipEvents> {
  start(): Promise<void>;
  /** Leaves gracefully (others mark this node 'left' at once), then stops. */
  leave(): Promise<void>;
  /** Stops without telling anyone (others detect it as failed). */
  stop(): void;
  /** The current view (a copy). */
  view(): View;
}
