/** node-messageport peer: a worker thread talking over parentPort (see MessagePortPeerData). */
import { parentPort, workerData } from 'node:worker_threads';
import { report } from '../peer-runtime.js';
import { Sink } from '../sink.js';
import type { MessagePortPeerData } from '../transports/node-messageport.js';

const port = parentPort;
if (port === null) throw new Error('messageport peer must run as a worker');
const data = workerData as MessagePortPeerData;

if (data.role === 'echo') {
  port.on('message', (msg: unknown) => {
    if (msg instanceof Uint8Array) port.postMessage(msg);
  });
} else {
  const { ackEvery } = data;
  const sink = new Sink();
  port.on('message', (msg: unknown) => {
    if (!(msg instanceof Uint8Array)) return;
    const result = sink.receive(msg.byteLength);
    if (result !== undefined) report(result);
    else if (msg.byteLength > 0 && sink.received % ackEvery === 0) report({ kind: 'ack', msgs: sink.received });
  });
}
report({ kind: 'ready' });
