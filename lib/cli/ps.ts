// ps.ts — `dvs ps`: the endpoints of the whole cluster (each member's agent
// asked by node N's agent), or with --local node N's own table (its endpoints
// and the proxies for remote ones); without an agent, read directly from the
// node's arena.
import { controlRequest } from '../agent/control.js';
import type { PsResult, PsRow } from '../agent/agent.js';
import { DvsError } from '../errors.js';
import { attach } from '../node.js';
import { expectArgs, type Flags } from './args.js';
import { printJson, table, target, TARGET_FLAGS } from './format.js';

export const psHelp = 'ps [--local] [--node N] [--namespace NS] [--json]    endpoints across the cluster (--local: node N\'s table, with its proxies)';

export async function ps(f: Flags): Promise<number> {
  expectArgs(f, psHelp, { values: TARGET_FLAGS, booleans: ['json', 'local'] });
  const { node, ns } = target(f);
  const local = f.flags.has('local');
  let r: PsResult;
  let source: string;
  try {
    if (local) {
      const x = (await controlRequest(ns, node, 'ps')) as { endpoints: PsRow[] };
      r = { node, scope: 'local', nodes: [], endpoints: x.endpoints };
      source = `node ${node}'s endpoint table (agent)`;
    } else {
      r = (await controlRequest(ns, node, 'ps', { cluster: true }, 15000)) as PsResult;
      source = `cluster-wide, from the agent of node ${node}`;
    }
  } catch (e) {
    if (!(e instanceof DvsError) || e.code !== 'EDVSNOTCONN') throw e;
    // No agent: the arena alone (local endpoints only).
    const n = attach({ node, namespace: f.values.get('namespace'), create: false });
    try {
      const rows = n.stats().endpoints.map((x) => ({ dc: x.dc, ep: x.ep, where: 'local' as const, node, pid: x.pid, gen: x.gen, name: (x as { name?: string }).name ?? '', msgsIn: x.msgsIn, msgsOut: x.msgsOut }));
      r = { node, scope: 'local', nodes: [], endpoints: rows.sort((a, b) => a.dc - b.dc || a.ep - b.ep) };
      source = `node ${node}'s arena (no agent running)`;
    } finally {
      n.detach();
    }
  }
  if (f.flags.has('json')) {
    printJson({ namespace: ns, ...r });
    return 0;
  }
  process.stdout.write(`${source}, namespace ${ns}\n`);
  const out = [['DC', 'ENDPOINT', 'NAME', 'WHERE', 'NODE', 'PID', 'MSGS IN', 'MSGS OUT']];
  for (const x of r.endpoints) out.push([x.dc, x.ep, x.name || '-', x.where, x.node, x.pid, x.msgsIn, x.msgsOut].map(String));
  process.stdout.write(table(out));
  for (const s of r.nodes) if (!s.answered) process.stdout.write(`node ${s.node} (${s.state}) not included: ${s.error ?? 'no answer'}\n`);
  return 0;
}
