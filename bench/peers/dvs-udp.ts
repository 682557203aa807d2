/**
 * dvs-udp peer (the server side of the `udp` suite's dvs rows): attaches to
 * node 2 of a two-node cluster and binds DC 0 endpoint <endpoint>. Node 2's
 * agent is either a separate `dvs agent` process started by the harness
 * (<agent> = '-') or embedded here (<agent> = its AgentConfig as JSON, e.g.
 * in invoker mode): then the peer starts it, waits until it sees node 1 up,
 * and only then attaches, binds and reports ready.
 * argv = <echo|sink> <async|spin> <namespace> <endpoint> <spin-us> <agent>
 *
 * Calls are answered with their own payload in both roles (the harness probes
 * reachability with calls). In the `sink` role one-way messages are counted
 * with `Sink` and their sequence numbers (u32 LE in the first 4 bytes, from 0,
 * across warm-up and measured phase) are checked: the result report carries
 * `received` (all data messages), `nextSeq`, `missing` (gaps) and `disorder`
 * (duplicates or reordering).
 *
 * `spin` uses receiveSync({ spinUs }) without returning to the event loop,
 * from the first call (the harness's reachability probe: by then an embedded
 * agent's control plane, which needs the event loop, has announced the
 * endpoint) until the sink's final end marker or a "quit" call (2-byte
 * payload); then the peer serves asynchronously again, so an embedded agent
 * answers its control socket ('stats'). On an IPC { kind: 'stop' } the peer
 * detaches, stops its embedded agent (its arena goes) and reports
 * { kind: 'stopped' }; the harness kills it afterwards.
 */
import { attach, startAgent, type Agent, type AgentConfig, type Message } from '../../lib/index.js';
import { exitWithParent, report } from '../peer-runtime.js';
import { parseRole, type SinkResult } from '../protocol.js';
import { Sink } from '../sink.js';

const QUIT_BYTES = 2;
const START_TIMEOUT_MS = 10_000;

const role = parseRole(process.argv[2]);
const mode = process.argv[3];
const namespace = process.argv[4];
const epNumber = Number(process.argv[5]);
const spinUs = Number(process.argv[6]);
const agentSpec = process.argv[7] ?? '-';
if (mode !== 'async' && mode !== 'spin') throw new Error(`mode must be async or spin, got ${mode}`);
if (!(spinUs >= 0)) throw new Error(`spin-us must be a number >= 0 (or Infinity), got ${process.argv[6]}`);
exitWithParent();

let agent: Agent | undefined;
if (agentSpec !== '-') {
  const config = JSON.parse(agentSpec) as AgentConfig;
  if (config.node !== 2 || config.namespace !== namespace) throw new Error('the embedded agent must be node 2 of the trial namespace');
  agent = await startAgent(config);
  await agent.waitForPeers(undefined, START_TIMEOUT_MS);
}

const node = attach({ node: 2, namespace, create: false });
const ep = node.bind(0, epNumber);
let stopping = false;
process.on('message', (msg: unknown) => {
  if ((msg as { kind?: unknown } | null)?.kind !== 'stop' || stopping) return;
  stopping = true;
  node.detach();
  void (agent?.stop() ?? Promise.resolve()).then(() => process.send?.({ kind: 'stopped' }));
});
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

/** spin mode: 'before' the first call, 'spinning' until the end marker or quit, then 'after'. */
let phase: 'before' | 'spinning' | 'after' = mode === 'spin' ? 'before' : 'after';
for (;;) {
  let m: Message;
  if (phase === 'spinning') {
    m = ep.receiveSync({ spinUs });
  } else {
    try {
      m = await ep.receive();
    } catch (err) {
      if (stopping) break;  // detached
      throw err;
    }
  }
  const call = m.kind === 'call';
  const quit = call && m.payload.byteLength === QUIT_BYTES;
  const done = handle(m);
  m.release();
  if (phase === 'before' && call) phase = 'spinning';
  else if (phase === 'spinning' && (done || quit)) phase = 'after';
}
