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
}

const MAX_LINE = 1 << 20;

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
      const conn: ControlConnection = {};
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
        else reject(new DvsError((res.error?.code ?? 'EDVSINVAL') as never, res.error?.message));
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
