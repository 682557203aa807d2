// control.ts — the agent's control socket: newline-delimited JSON requests
// and responses over a Unix stream socket in the abstract namespace
// (`\0dvs/<namespace>/<node>/agent`, so nothing is left on disk). Local
// processes keep one connection open while attached (the agent reaps them the
// moment it closes); the CLI sends one-off requests.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { DvsError } from '../errors.js';

export interface ControlRequest {
  id: number;
  op: string;
  [k: string]: unknown;
}

export type ControlHandler = (req: ControlRequest, conn: ControlConnection) => unknown;

export interface ControlConnection {
  /** Set by a `hello` request: the pid of an attached process. */
  pid?: number;
  /** Writes an unsolicited line ({ev: ...}) to this connection (absent for in-process requests). */
  push?(msg: object): void;
  /** Set by a `watch` request: what the agent pushes changes to. */
  watcher?: unknown;
}

const MAX_LINE = 1 << 20;
/** Unread pushed bytes a watching connection may accumulate before the agent closes it. */
const MAX_BACKLOG = 64 << 20;

export function controlPath(namespace: string, node: number): string {
  return `\0dvs/${namespace}/${node}/agent`;
}

export function defaultNamespace(ns?: string): string {
  return ns ?? process.env.DVS_NAMESPACE ?? 'default';
}

/** Splits a byte stream into lines; oversize lines destroy the connection. */
function onLines(sock: Socket, f: (line: string) => void): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    if (buf.length > MAX_LINE) {
      sock.destroy();
      return;
    }
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line) f(line);
    }
  });
}

export class ControlServer {
  private readonly server: Server;
  private readonly conns = new Set<Socket>();

  constructor(
    readonly path: string,
    handler: ControlHandler,
    onClose: (conn: ControlConnection) => void,
  ) {
    this.server = createServer((sock) => {
      const conn: ControlConnection = {
        push: (msg) => {
          if (sock.destroyed) return;
          // A watcher that stopped reading: drop it rather than buffer without bound (it sees the close).
          if (sock.writableLength > MAX_BACKLOG) return void sock.destroy();
          sock.write(JSON.stringify(msg) + '\n');
        },
      };
      this.conns.add(sock);
      sock.on('error', () => sock.destroy());
      sock.on('close', () => {
        this.conns.delete(sock);
        onClose(conn);
      });
      onLines(sock, (line) => {
        let req: ControlRequest;
        try {
          req = JSON.parse(line) as ControlRequest;
          if (typeof req !== 'object' || req === null || typeof req.op !== 'string') throw new Error('not a request');
        } catch {
          sock.write(JSON.stringify({ id: null, ok: false, error: { code: 'EDVSINVAL', message: 'malformed request' } }) + '\n');
          return;
        }
        Promise.resolve()
          .then(() => handler(req, conn))
          .then(
            (result) => ({ id: req.id, ok: true, result }),
            (e: unknown) => ({
              id: req.id,
              ok: false,
              error: { code: e instanceof DvsError ? e.code : 'EDVSINVAL', message: e instanceof Error ? e.message : String(e) },
            }),
          )
          .then((res) => {
            if (!sock.destroyed) sock.write(JSON.stringify(res) + '\n');
          });
      });
    });
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const fail = (e: NodeJS.ErrnoException): void =>
        reject(
          e.code === 'EADDRINUSE'
            ? new DvsError('EDVSBUSY', `another agent already listens on ${this.path.slice(1)}`)
            : new DvsError('EDVSINVAL', `control socket: ${e.message}`),
        );
      this.server.once('error', fail);
      this.server.listen({ path: this.path }, () => {
        this.server.off('error', fail);
        resolve();
      });
    });
  }

  close(): Promise<void> {
    for (const s of this.conns) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** One request to a node's agent; rejects with EDVSNOTCONN when no agent answers. */
export function controlRequest(namespace: string, node: number, op: string, args: Record<string, unknown> = {}, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const path = controlPath(namespace, node);
    const sock = connect({ path });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new DvsError('EDVSTIMEDOUT', `the agent of node ${node} did not answer '${op}' within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new DvsError('EDVSNOTCONN', `no agent for node ${node} in namespace '${namespace}' (${e.code ?? e.message})`));
    });
    onLines(sock, (line) => {
      clearTimeout(timer);
      sock.end();
      try {
        const res = JSON.parse(line) as { ok: boolean; result?: unknown; error?: { code: string; message: string } };
        if (res.ok) resolve(res.result);
        else reject(new DvsError((res.error?.code ?? 'EDVSINVAL') as never, res.error?.message?.replace(/^EDVS[A-Z0-9]+: /, '')));
      } catch {
        reject(new DvsError('EDVSINVAL', 'malformed answer from the agent'));
      }
    });
    sock.write(JSON.stringify({ id: 1, op, ...args }) + '\n');
  });
}

/**
 * Registers an attached process with its agent and keeps the connection open
 * (unreferenced: it never keeps the process alive). When the process dies the
 * kernel closes it and the agent reaps at once. Failures are ignored: without
 * an agent, the other processes' liveness checks reap instead.
 */
export function registerWithAgent(namespace: string, node: number): Socket {
  const sock = connect({ path: controlPath(namespace, node) });
  sock.on('error', () => sock.destroy());
  sock.on('connect', () => sock.unref());
  sock.unref();
  sock.write(JSON.stringify({ id: 0, op: 'hello', pid: process.pid }) + '\n');
  sock.resume();  // answers are not needed
  return sock;
}

type Answer = { id?: unknown; ok?: boolean; result?: unknown; error?: { code: string; message: string }; ev?: unknown };

/**
 * A long-lived connection to a node's agent: requests matched to answers by
 * id, and unsolicited lines ({ev: ...}, after a `watch`) handed to `onPush`.
 * Unreferenced while nothing is pending: an idle client never keeps the
 * process alive.
 */
export class ControlClient {
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  private seq = 0;
  private closed = false;
  private held = false;
  onPush: (msg: Record<string, unknown>) => void = () => {};
  /** The connection ended (the agent stopped or died, or close()). */
  onClose: (err: DvsError) => void = () => {};

  private constructor(
    private readonly sock: Socket,
    readonly namespace: string,
    readonly node: number,
  ) {
    sock.on('error', () => sock.destroy());
    sock.on('close', () => this.ended(new DvsError('EDVSNOTCONN', `the connection to the agent of node ${node} closed`)));
    onLines(sock, (line) => this.line(line));
  }

  static connect(namespace: string, node: number, timeoutMs = 5000): Promise<ControlClient> {
    return new Promise((resolve, reject) => {
      const sock = connect({ path: controlPath(namespace, node) });
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new DvsError('EDVSTIMEDOUT', `the agent of node ${node} did not accept a connection within ${timeoutMs} ms`));
      }, timeoutMs);
      const fail = (e: NodeJS.ErrnoException): void => {
        clearTimeout(timer);
        reject(new DvsError('EDVSNOTCONN', `no agent for node ${node} in namespace '${namespace}' (${e.code ?? e.message})`));
      };
      sock.once('error', fail);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.off('error', fail);
        sock.unref();
        resolve(new ControlClient(sock, namespace, node));
      });
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  request(op: string, args: Record<string, unknown> = {}, timeoutMs = 5000): Promise<unknown> {
    if (this.closed) return Promise.reject(new DvsError('EDVSNOTCONN', `the connection to the agent of node ${this.node} is closed`));
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.settled(id);
        reject(new DvsError('EDVSTIMEDOUT', `the agent of node ${this.node} did not answer '${op}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      if (this.pending.size === 1) this.sock.ref();
      this.sock.write(JSON.stringify({ ...args, id, op }) + '\n');
    });
  }

  /** Closes the connection; pending requests fail with EDVSNOTCONN. */
  close(): void {
    this.ended(new DvsError('EDVSNOTCONN', 'closed'), false);
  }

  /** Keeps the process alive while on (requests in flight do too). */
  keepAlive(on: boolean): void {
    this.held = on;
    if (this.closed) return;
    if (on) this.sock.ref();
    else if (!this.pending.size) this.sock.unref();
  }

  private settled(id: number): void {
    this.pending.delete(id);
    if (!this.pending.size && !this.held && !this.closed) this.sock.unref();
  }

  private line(line: string): void {
    let m: Answer;
    try {
      m = JSON.parse(line) as Answer;
    } catch {
      return;
    }
    if (typeof m !== 'object' || m === null) return;
    if (m.ev !== undefined) {
      if (!this.closed) this.onPush(m as Record<string, unknown>);
      return;
    }
    const p = typeof m.id === 'number' ? this.pending.get(m.id) : undefined;
    if (!p) return;
    clearTimeout(p.timer);
    this.settled(m.id as number);
    if (m.ok) p.resolve(m.result);
    else p.reject(new DvsError((m.error?.code ?? 'EDVSINVAL') as never, m.error?.message?.replace(/^EDVS[A-Z0-9]+: /, '')));
  }

  private ended(err: DvsError, notify = true): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.destroy();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    if (notify) this.onClose(err);
  }
}
