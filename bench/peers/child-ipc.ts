/** node-child-ipc peer: data arrives as Buffers on the fork IPC channel, role in argv[2]. */
import { exitWithParent, report } from '../peer-runtime.js';
import { parseRole } from '../protocol.js';
import { Sink } from '../sink.js';

const role = parseRole(process.argv[2]);
const send = process.send?.bind(process);
if (send === undefined) throw new Error('child-ipc peer needs an IPC channel');
exitWithParent();

const sink = new Sink();
process.on('message', (msg: unknown) => {
  if (!(msg instanceof Uint8Array)) return;
  if (role === 'echo') send(msg);
  else {
    const result = sink.receive(msg.byteLength);
    if (result !== undefined) report(result);
  }
});
report({ kind: 'ready' });
