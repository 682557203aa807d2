// ps.ts — `dvs ps`: a node's endpoint table (local endpoints and proxies for
// remote ones), from its agent's control socket; without an agent, read
// directly from the node's arena.
import { controlRequest, defaultNamespace } from '../agent/control.js';
import type { PsRow } from '../agent/agent.js';
import { DvsError } from '../errors.js';
import { attach } from '../node.js';
import { intFlag, type Flags } from './args.js';

function table(rows: string[][]): string {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd() + '\n').join('');
}

export async function ps(f: Flags): Promise<number> {
  const node = intFlag(f, 'node', Number(process.env.DVS_NODE ?? 0), 0, 1023);
  const ns = defaultNamespace(f.values.get('namespace'));
  const json = f.flags.has('json');
  let rows: PsRow[];
  let source: string;
  try {
    const r = (await controlRequest(ns, node, 'ps')) as { endpoints: PsRow[] };
    rows = r.endpoints;
    source = `agent of node ${node}`;
  } catch (e) {
    if (!(e instanceof DvsError) || e.code !== 'EDVSNOTCONN') throw e;
    // No agent: the arena alone (local endpoints only).
    const n = attach({ node, namespace: f.values.get('namespace'), create: false });
    try {
      rows = n.stats().endpoints.map((x) => ({ dc: x.dc, ep: x.ep, where: 'local' as const, node, pid: x.pid, msgsIn: x.msgsIn, msgsOut: x.msgsOut }));
      source = `node ${node}'s arena (no agent running)`;
    } finally {
      n.detach();
    }
  }
  rows.sort((a, b) => a.dc - b.dc || a.ep - b.ep);
  if (json) {
    process.stdout.write(JSON.stringify({ node, namespace: ns, endpoints: rows }, null, 2) + '\n');
    return 0;
  }
  process.stdout.write(`${source}, namespace ${ns}\n`);
  const out = [['DC', 'ENDPOINT', 'WHERE', 'NODE', 'PID', 'MSGS IN', 'MSGS OUT']];
  for (const r of rows) out.push([r.dc, r.ep, r.where, r.node, r.pid, r.msgsIn, r.msgsOut].map(String));
  process.stdout.write(table(out));
  return 0;
}
