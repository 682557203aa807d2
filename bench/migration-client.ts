/**
 * Client load of the `migration` bench suite (bench/suites/migration.ts):
 * `node dist/bench/migration-client.js NS NODE DC TARGET FIRST_EP COUNT PIPELINE SAMPLES_FILE`.
 *
 * Attaches to node NODE and binds COUNT endpoints from FIRST_EP; prints
 * "ready"; then every client loops until stdin says "stop": PIPELINE one-way
 * {op:'put', c, s} (not awaited before the call), then the call
 * {op:'add', c, s}, every message with the client's next sequence number
 * (c = "NODE:EP", s = 1, 2, 3, …). A reply must be {s, n} with s = the call's
 * seq and n = s (the service saw every message of this client exactly once,
 * its state intact); anything else is a bad reply. Each call's start and end
 * are taken on the host's monotonic clock (ms) and, after "stop", written to
 * SAMPLES_FILE as Float64 pairs (start, end). Then one JSON line:
 * {clients: [{c, seqs, calls, sent, failed, badReplies, errors}]}, and exit 0.
 * Errors are counted, never thrown: a failed message still used its seq (the
 * suite counts it as lost unless the service saw it).
 */
import { writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { attach, type Endpoint } from '../lib/index.js';

export interface LoadClientResult {
  c: string;
  /** Sequence numbers used (1..seqs). */
  seqs: number;
  calls: number;
  sent: number;
  failed: number;
  badReplies: number;
  errors: string[];
}

const TIMEOUT_MS = 60_000;

const [ns, nodeS, dcS, targetS, firstS, countS, pipeS, samplesFile] = process.argv.slice(2);
if (samplesFile === undefined) {
  process.stderr.write('usage: migration-client.js NS NODE DC TARGET FIRST_EP COUNT PIPELINE SAMPLES_FILE\n');
  process.exit(2);
}
const node = attach({ node: Number(nodeS), namespace: ns });
const dc = Number(dcS);
const target = Number(targetS);
const pipeline = Number(pipeS);
const eps = Array.from({ length: Number(countS) }, (_, i) => node.bind(dc, Number(firstS) + i));
const now = (): number => Number(process.hrtime.bigint()) / 1e6;

let stopping = false;
let samples = new Float64Array(1 << 16);
let nSamples = 0;

function sample(t0: number, t1: number): void {
  if (nSamples + 2 > samples.length) {
    const bigger = new Float64Array(samples.length * 2);
    bigger.set(samples);
    samples = bigger;
  }
  samples[nSamples++] = t0;
  samples[nSamples++] = t1;
}

async function run(ep: Endpoint): Promise<LoadClientResult> {
  const c = `${nodeS}:${ep.ep}`;
  const r: LoadClientResult = { c, seqs: 0, calls: 0, sent: 0, failed: 0, badReplies: 0, errors: [] };
  const fail = (e: unknown): void => {
    r.failed++;
    if (r.errors.length < 5) r.errors.push((e as Error).message);
  };
  let s = 0;
  while (!stopping) {
    const sends: Promise<void>[] = [];
    for (let i = 0; i < pipeline; i++) {
      sends.push(ep.send(target, JSON.stringify({ op: 'put', c, s: ++s }), { timeoutMs: TIMEOUT_MS }));
      r.sent++;
    }
    const my = ++s;
    const t0 = now();
    try {
      const m = await ep.call(target, JSON.stringify({ op: 'add', c, s: my }), { timeoutMs: TIMEOUT_MS });
      sample(t0, now());
      const v = JSON.parse(m.text()) as { s?: number; n?: number };
      m.release();
      if (v.s !== my || v.n !== my) {
        r.badReplies++;
        if (r.errors.length < 5) r.errors.push(`call ${my}: reply ${JSON.stringify(v)}`);
      }
    } catch (e) {
      fail(e);
    }
    r.calls++;
    for (const x of await Promise.allSettled(sends)) if (x.status === 'rejected') fail(x.reason);
  }
  r.seqs = s;
  return r;
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim() === 'stop') stopping = true;
});
// The suite gone (stdin closed) before "stop": exit at once.
rl.on('close', () => {
  if (!stopping) process.exit(1);
});
process.stdout.write('ready\n');
const clients = await Promise.all(eps.map(run));
writeFileSync(samplesFile, samples.subarray(0, nSamples));
process.stdout.write(JSON.stringify({ clients }) + '\n');
node.detach();
process.exit(0);
