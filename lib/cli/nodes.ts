// nodes.ts — `dvs nodes`: the cluster's members as one node's agent sees them
// (id, address, state, incarnation, endpoints), with its view number.
import { controlRequest, defaultNamespace } from '../agent/control.js';
import type { NodesResult } from '../agent/agent.js';
import { intFlag, type Flags } from './args.js';

function table(rows: string[][]): string {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd() + '\n').join('');
}

export const nodesHelp = "nodes [--node N] [--namespace NS] [--json]    the cluster's members as node N's agent sees them";

export async function nodes(f: Flags): Promise<number> {
  const node = intFlag(f, 'node', Number(process.env.DVS_NODE ?? 0), 0, 1023);
  const ns = defaultNamespace(f.values.get('namespace'));
  const r = (await controlRequest(ns, node, 'nodes')) as NodesResult;
  if (f.flags.has('json')) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return 0;
  }
  process.stdout.write(`agent of node ${node}, namespace ${ns}: ${r.mode} membership, view ${r.view}\n`);
  const out = [['NODE', 'ADDRESS', 'STATE', 'INCARNATION', 'ENDPOINTS']];
  for (const m of r.members) out.push([String(m.node) + (m.node === node ? '*' : ''), m.address, m.state, String(m.incarnation), String(m.endpoints)]);
  process.stdout.write(table(out));
  return 0;
}
