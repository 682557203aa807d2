// ps.ts — `dvs ps`: the endpoint table of a node on this host.
import { attach } from '../node.js';
import { intFlag, type Flags } from './args.js';

export async function ps(f: Flags): Promise<number> {
  const node = attach({ node: intFlag(f, 'node', 0, 0, 1023), namespace: f.values.get('namespace'), create: false });
  try {
    const s = node.stats();
    const self = process.pid;
    const eps = s.endpoints;
    if (f.flags.has('json')) {
      process.stdout.write(JSON.stringify({ node: s.node, segment: s.segment, endpoints: eps, procs: s.procs.filter((p) => p.pid !== self), classes: s.classes }, null, 2) + '\n');
      return 0;
    }
    const rows = [['DC', 'ENDPOINT', 'WHERE', 'NODE', 'PID', 'MSGS IN', 'MSGS OUT', 'QUEUED']];
    for (const e of eps) rows.push([e.dc, e.ep, 'local', s.node, e.pid, e.msgsIn, e.msgsOut, e.queued].map(String));
    const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    process.stdout.write(`node ${s.node} (/dev/shm/${s.segment}), ${s.procs.length - 1} other process(es) attached\n`);
    for (const r of rows) process.stdout.write(r.map((c, i) => c.padEnd(w[i])).join('  ') + '\n');
    return 0;
  } finally {
    node.detach();
  }
}
