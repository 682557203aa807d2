/** Peer-side helpers shared by the scripts in `peers/`. */
import { isMainThread, parentPort } from 'node:worker_threads';
import type { PeerReport } from './protocol.js';

/** Sends a control report to the harness (parentPort in a worker, IPC in a child process). */
export function report(msg: PeerReport): void {
  if (!isMainThread && parentPort !== null) {
    parentPort.postMessage(msg);
    return;
  }
  if (process.send === undefined) throw new Error('peer started without an IPC channel');
  process.send(msg);
}

/** Makes a child-process peer exit as soon as the harness goes away. */
export function exitWithParent(): void {
  process.on('disconnect', () => process.exit(0));
}
