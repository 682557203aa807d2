/**
 * Harness-side peer lifecycle: start a peer script from `peers/` as a child
 * process or worker, wait for its `ready` report, run the trial, and always
 * stop the peer afterwards. Start-up and the trial are bounded by timeouts,
 * and an unexpected peer exit fails the trial immediately.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once, type EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { Mailbox } from './mailbox.js';
import { isPeerReport, type SinkResult } from './protocol.js';
import { withTimeout } from './timeout.js';

const START_TIMEOUT_MS = 10_000;
const TRIAL_TIMEOUT_MS = 30_000;
const STDERR_TAIL = 2000;

export interface Peer<H> {
  /** The ChildProcess or Worker, for transports that exchange data over it. */
  readonly handle: H;
  /** The `address` of the peer's `ready` report, if it sent one. */
  readonly address: string | undefined;
  /**
   * Aborted when the trial ends for any reason (finished, failed, timed out,
   * peer died). Tie sockets, waits and loops to it so nothing outlives the trial.
   */
  readonly signal: AbortSignal;
  /** The sink's next `result` report. */
  result(): Promise<SinkResult>;
}

/** The line that names the error in a crashed peer's stderr (else its last line). */
function errorLine(stderr: string): string {
  const lines = stderr.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  return lines.find((line) => /^[A-Za-z]*Error\b/.test(line)) ?? lines.at(-1) ?? '';
}

function peerScript(name: string): URL {
  return new URL(`./peers/${name}.js`, import.meta.url);
}

/** Runs `fn` against `dist/bench/peers/<name>.js` forked with an IPC channel. */
export function withProcessPeer<T>(
  name: string,
  args: readonly string[],
  serialization: 'json' | 'advanced',
  fn: (peer: Peer<ChildProcess>) => Promise<T>,
): Promise<T> {
  const child = fork(fileURLToPath(peerScript(name)), args, {
    serialization,
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    stderr = (stderr + text).slice(-STDERR_TAIL);
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
  };
  // 'close' rather than 'exit': it fires after stderr is drained, so diagnostics are complete.
  return supervise(child, `peer ${name}`, 'close', stop, fn, () => errorLine(stderr));
}

/** Runs `fn` against `dist/bench/peers/<name>.js` started as a worker thread. */
export function withWorkerPeer<T>(name: string, workerData: unknown, fn: (peer: Peer<Worker>) => Promise<T>): Promise<T> {
  const worker = new Worker(peerScript(name), { workerData });
  const stop = async (): Promise<void> => {
    await worker.terminate();
  };
  return supervise(worker, `worker ${name}`, 'exit', stop, fn, () => '');
}

async function supervise<H extends EventEmitter, T>(
  handle: H,
  what: string,
  exitEvent: 'exit' | 'close',
  stop: () => Promise<void>,
  fn: (peer: Peer<H>) => Promise<T>,
  diagnostics: () => string,
): Promise<T> {
  const trial = new AbortController();
  const results = new Mailbox<SinkResult>(trial.signal);
  let markReady = (_address: string | undefined): void => {};
  const ready = new Promise<string | undefined>((resolve) => {
    markReady = resolve;
  });
  handle.on('message', (msg: unknown) => {
    if (!isPeerReport(msg)) return;
    if (msg.kind === 'ready') markReady(msg.address);
    else if (msg.kind === 'result') results.deliver(msg);
  });
  const died = new Promise<never>((_, reject) => {
    const fail = (err: Error): void => {
      trial.abort(err);
      reject(err);
    };
    handle.on('error', (err: Error) => fail(new Error(`${what} failed: ${err.message}`)));
    handle.on(exitEvent, (code: number | null, signal?: NodeJS.Signals | null) => {
      const detail = diagnostics();
      fail(new Error(`${what} exited (${signal ?? `code ${code}`})${detail === '' ? '' : `: ${detail}`}`));
    });
  });
  try {
    const address = await withTimeout(Promise.race([ready, died]), START_TIMEOUT_MS, `${what} start`);
    const peer: Peer<H> = { handle, address, signal: trial.signal, result: () => results.next() };
    return await withTimeout(Promise.race([fn(peer), died]), TRIAL_TIMEOUT_MS, what);
  } finally {
    trial.abort(new Error(`${what}: trial is over`));
    await stop();
  }
}
