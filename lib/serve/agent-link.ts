// agent-link.ts — the service connection of a `dvs serve` process to its
// node's agent: one control connection (besides the node's own `hello`
// connection) on which the runtime announces itself ('service') and answers
// the migration steps ('mig-image', 'mig-failed', 'mig-restored',
// 'mig-serving'), and the agent pushes them ({ev:'mig-quiesce'|'mig-resume'|
// 'mig-detached'|'mig-adopt', id, ...}). Protocol: docs/DESIGN.md "dvs serve".
import { ControlClient } from '../agent/control.js';
import type { DvsError } from '../errors.js';

export type Push = Record<string, unknown> & { ev: string };

export class AgentLink {
  /** Unsolicited lines from the agent. */
  onPush: (p: Push) => void = () => {};
  /** The connection ended (the agent stopped or died). */
  onClose: (err: DvsError) => void = () => {};
  /** Requests not answered yet. */
  private readonly inFlight = new Set<Promise<unknown>>();

  private constructor(
    private readonly client: ControlClient,
    private readonly warn: (msg: string) => void,
  ) {
    client.onPush = (m) => {
      if (typeof m.ev === 'string') this.onPush(m as Push);
    };
    client.onClose = (err) => this.onClose(err);
  }

  /** Connects to the agent of (namespace, node); EDVSNOTCONN when there is none. */
  static async connect(namespace: string, node: number, warn: (msg: string) => void): Promise<AgentLink> {
    return new AgentLink(await ControlClient.connect(namespace, node), warn);
  }

  get isClosed(): boolean {
    return this.client.isClosed;
  }

  /**
   * Sends one line ({op, ...fields}); the agent's answer only matters when it
   * is an error, which is reported through `warn` (e.g. an agent that does not
   * know the op yet).
   */
  send(op: string, fields: Record<string, unknown>): void {
    if (this.client.isClosed) return;
    const p = this.client
      .request(op, fields, 10000)
      .catch((e: DvsError) => {
        if (!this.client.isClosed) this.warn(`the agent answered '${op}' with ${e.message}`);
      })
      .finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  /** Resolves once every line sent so far has been answered (or the connection closed), at most `ms` later. */
  settled(ms: number): Promise<void> {
    if (!this.inFlight.size) return Promise.resolve();
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      Promise.allSettled([...this.inFlight]).then(() => {}),
      new Promise<void>((r) => (timer = setTimeout(r, ms))),
    ]).finally(() => clearTimeout(timer));
  }

  close(): void {
    this.client.close();
  }
}
