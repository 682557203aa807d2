/**
 * dvs-udp peer (the server side of the `udp` suite's dvs rows): attaches to
 * node 2 of a two-agent cluster (the agents are started by the harness) and
 * binds DC 0 endpoint <endpoint>.
 * argv = <echo|sink> <async|spin> <namespace> <endpoint> <spin-us>
 *
 * Calls are answered with their own payload in both roles (the harness probes
 * reachability with calls). In the `sink` role one-way messages are counted
 * with `Sink` and their sequence numbers (u32 LE in the first 4 bytes, from 0,
 * across warm-up and measured phase) are checked: the result report carries
 * `received` (all data messages), `nextSeq`, `missing` (gaps) and `disorder`
 * (duplicates or reordering). `spin` uses receiveSync({ spinUs }).
 */
import { attach, type Message } from '../../lib/index.js';
import { exitWithParent, report } from '../peer-runtime.js';
import { parseRole, type SinkResult } from '../protocol.js';
import { Sink } from '../sink.js';

const role = parseRole(process.argv[2]);
const mode = process.argv[3];
const namespace = process.argv[4];
const epNumber = Number(process.argv[5]);
const spinUs = Number(process.argv[6]);
if (mode !== 'async' && mode !== 'spin') throw new Error(`mode must be async or spin, got ${mode}`);
exitWithParent();

const node = attach({ node: 2, namespace, create: false });
const ep = node.bind(0, epNumber);
report({ kind: 'ready' });

const sink = new Sink();
let received = 0;
let nextSeq = 0;
let missing = 0;
let disorder = 0;

/** Handles one message; returns true when the final end marker has been reported. */
function handle(m: Message): boolean {
  if (m.kind === 'call') {
    m.reply(m.payload);
    return false;
  }
  if (role === 'echo') return false;
  const p = m.payload;
  if (p.byteLength >= 4) {
    received++;
    const seq = (p[0] | (p[1] << 8) | (p[2] << 16) | (p[3] << 24)) >>> 0;
    if (seq > nextSeq) missing += seq - nextSeq;
    else if (seq < nextSeq) disorder++;
    nextSeq = seq + 1;
  } else if (p.byteLength > 0) {
    received++;
    disorder++;  // data messages carry a sequence number
  }
  const result = sink.receive(p.byteLength);
  if (result === undefined) return false;
  const full: SinkResult & Record<string, unknown> = { ...result, received, nextSeq, missing, disorder };
  report(full);
  return true;
}

if (mode === 'spin') {
  // Busy-polls (up to spinUs before sleeping) without returning to the event
  // loop until the final end marker; an echo peer never returns (it is killed).
  for (;;) {
    const m = ep.receiveSync({ spinUs });
    const done = handle(m);
    m.release();
    if (done) break;
  }
} else {
  for await (const m of ep) handle(m);
}
