/** dvs peer: argv = <role> <spin|async|async-sleep> <namespace> <endpoint>; attaches to node 1, DC 0. */
import { attach } from '../../lib/index.js';
import { exitWithParent, report } from '../peer-runtime.js';
import { parseRole } from '../protocol.js';
import { Sink } from '../sink.js';

const role = parseRole(process.argv[2]);
const mode = process.argv[3];
const namespace = process.argv[4];
const epNumber = Number(process.argv[5]);
exitWithParent();

const node = attach({ node: 1, namespace, asyncSpinUs: mode === 'async-sleep' ? 0 : undefined });
const ep = node.bind(0, epNumber);
report({ kind: 'ready' });
const sink = new Sink();

if (mode === 'spin') {
  // Busy-polls without returning to the event loop until the final end marker.
  for (;;) {
    const m = ep.receiveSync({ spinUs: Infinity });
    if (role === 'echo') m.reply(m.payload);
    else {
      const result = sink.receive(m.length);
      if (result !== undefined) {
        report(result);
        break;
      }
    }
    m.release();
  }
} else {
  for await (const m of ep) {
    if (role === 'echo') m.reply(m.payload);
    else {
      const result = sink.receive(m.length);
      if (result !== undefined) report(result);
    }
  }
}
