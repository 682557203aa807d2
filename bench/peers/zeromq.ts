/**
 * zeromq peer: binds argv[3] (ipc://... or tcp://127.0.0.1:*), role in argv[2],
 * high-water mark in argv[4]; reports the bound endpoint in `ready`.
 */
import { Pull, Reply } from 'zeromq';
import { exitWithParent, report } from '../peer-runtime.js';
import { parseRole } from '../protocol.js';
import { Sink } from '../sink.js';

const role = parseRole(process.argv[2]);
const endpoint = process.argv[3];
const highWaterMark = Number(process.argv[4]);
if (endpoint === undefined || !(highWaterMark > 0)) throw new Error('usage: zeromq.js <role> <endpoint> <hwm>');
exitWithParent();

if (role === 'echo') {
  const rep = new Reply({ linger: 0 });
  await rep.bind(endpoint);
  report({ kind: 'ready', address: rep.lastEndpoint ?? endpoint });
  for await (const [msg] of rep) await rep.send(msg);
} else {
  const pull = new Pull({ linger: 0, receiveHighWaterMark: highWaterMark });
  await pull.bind(endpoint);
  report({ kind: 'ready', address: pull.lastEndpoint ?? endpoint });
  const sink = new Sink();
  for await (const [msg] of pull) {
    const result = sink.receive(msg.length);
    if (result !== undefined) report(result);
  }
}
