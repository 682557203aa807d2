// demo-client.ts — `dvs demo-client NS NODE FIRST_EP COUNT` (internal, run by
// `dvs demo`): COUNT clients of the demo's key-value service (examples/kv.js,
// DC 1 endpoint 10) on NODE, each looping: two one-way puts and one call, each
// with the client's next sequence number of its kind, the call awaited; a call
// must be answered {ok: true}. Talks to `dvs demo` through JSON lines:
//   stdin  "win FROM TO FROM2 TO2" → {win: {lat: [ms...], inFlight, held}}: the latencies of the calls that
//                           started in [FROM, TO] (epoch ms; calls still waiting count with their age so far),
//                           and how many calls were waiting at some moment of [FROM2, TO2]
//   stdin  "stop"         → each client finishes its round and asks the service for its counters;
//                           prints {clients: [{id, calls, sends, failed, errors, stats}]} and exits
//   stdin closed          → exits at once
import { createInterface } from 'node:readline';
import { attach } from '../node.js';
import { intArg, type Flags } from './args.js';

const DC = 1;
const SERVICE = 10;
/** Calls kept for latency windows (start, ms): the last this many per process. */
const KEEP = 200_000;

export interface DemoClientStats {
  id: string;
  calls: number;
  sends: number;
  failed: number;
  errors: string[];
  /** The service's counters for this sender (kv.js `stats`): per kind {count, last, dup, gap}. */
  stats: { calls: Track; sends: Track } | null;
}
interface Track {
  count: number;
  last: number | null;
  dup: number;
  gap: number;
}

const now = (): number => performance.timeOrigin + performance.now();

export async function demoClient(f: Flags): Promise<number> {
  const [ns, nodeS, firstS, countS] = f.positional;
  const nodeId = intArg(nodeS, 'NODE');
  const node = attach({ node: nodeId, namespace: ns });
  const eps = Array.from({ length: intArg(countS, 'COUNT') }, (_, i) => node.bind(DC, intArg(firstS, 'FIRST_EP') + i));
  const starts = new Float64Array(KEEP);
  const lats = new Float64Array(KEEP);
  let n = 0;
  const waiting = new Set<number>();  // start times of calls in flight
  let stopping = false;

  const one = async (ep: (typeof eps)[number]): Promise<DemoClientStats> => {
    const r: DemoClientStats = { id: `${nodeId}:${ep.ep}`, calls: 0, sends: 0, failed: 0, errors: [], stats: null };
    const err = (e: unknown): void => {
      r.failed++;
      if (r.errors.length < 3) r.errors.push((e as Error).message);
    };
    const key = `client ${r.id}`;
    while (!stopping) {
      const sends = [0, 1].map(() => ep.send(SERVICE, JSON.stringify({ op: 'put', key: `${key} last`, value: r.sends, seq: r.sends++ }), { timeoutMs: 60000 }));
      const t0 = now();
      waiting.add(t0);
      try {
        const m = await ep.call(SERVICE, JSON.stringify({ op: 'put', key, value: r.calls, seq: r.calls++ }), { timeoutMs: 60000 });
        const v = JSON.parse(m.text()) as { ok?: boolean };
        m.release();
        if (v.ok !== true) err(new Error(`unexpected reply ${JSON.stringify(v)}`));
      } catch (e) {
        err(e);
      }
      waiting.delete(t0);
      const i = n++ % KEEP;
      starts[i] = t0;
      lats[i] = now() - t0;
      for (const x of await Promise.allSettled(sends)) if (x.status === 'rejected') err(x.reason);
    }
    try {
      const m = await ep.call(SERVICE, JSON.stringify({ op: 'stats' }), { timeoutMs: 60000 });
      const s = JSON.parse(m.text()) as { senders?: Record<string, DemoClientStats['stats']> };
      m.release();
      r.stats = s.senders?.[r.id] ?? null;
    } catch (e) {
      err(e);
    }
    return r;
  };

  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const [cmd, a, b, c, d] = line.split(' ');
    if (cmd === 'stop') stopping = true;
    else if (cmd === 'win') {
      const from = Number(a);
      const to = Number(b);
      const w: number[] = [];
      for (let i = Math.max(0, n - KEEP); i < n; i++) {
        const k = i % KEEP;
        if (starts[k] >= from && starts[k] <= to) w.push(lats[k]);
      }
      const t = now();
      let inFlight = 0;
      for (const s of waiting)
        if (s >= from && s <= to) {
          w.push(t - s);
          inFlight++;
        }
      // Calls that overlapped [FROM2, TO2] (waiting at some moment of it): those the migration held.
      let held = 0;
      const from2 = Number(c);
      const to2 = Number(d);
      for (let i = Math.max(0, n - KEEP); i < n; i++) {
        const k = i % KEEP;
        if (starts[k] <= to2 && starts[k] + lats[k] >= from2) held++;
      }
      for (const s of waiting) if (s <= to2) held++;
      process.stdout.write(JSON.stringify({ win: { lat: w.map((x) => Math.round(x * 1000) / 1000), inFlight, held } }) + '\n');
    }
  });
  rl.on('close', () => process.exit(1));
  process.stdout.write('ready\n');
  const clients = await Promise.all(eps.map(one));
  process.stdout.write(JSON.stringify({ clients }) + '\n');
  node.detach();
  process.exit(0);
}
