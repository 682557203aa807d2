// nodes.ts — `dvs nodes`: the cluster's members as one node's agent sees them
// (id, address, state, incarnation, endpoints), with its view number.
import { controlRequest } from '../agent/control.js';
import type { NodesResult } from '../agent/agent.js';
import { expectArgs, type Flags } from './args.js';
import { printJson, table, target, TARGET_FLAGS } from './format.js';

export const nodesHelp = "nodes [--node N] [--namespace NS] [--json]    the cluster's members as node N's agent sees them";

export async function nodes(f: Flags): Promise<number> {
  expectArgs(f, nodesHelp, { values: TARGET_FLAGS, booleans: ['json'] });
  const { node, ns } = target(f);
  const r = (await controlRequest(ns, node, 'nodes')) as NodesResult;
  if (f.flags.has('json')) {
    printJson(r);
    return 0;
  }
  process.stdout.write(`agent of node ${node}, namespace ${ns}: ${r.mode} membership, view ${r.view}\n`);
  const out = [['NODE', 'ADDRESS', 'STATE', 'INCARNATION', 'ENDPOINTS']];
  for (const m of r.members) out.push([String(m.node) + (m.node === node ? '*' : ''), m.address, m.state, String(m.incarnation), String(m.endpoints)]);
  process.stdout.write(table(out));
  return 0;
}
