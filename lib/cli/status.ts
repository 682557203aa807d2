// status.ts — `dvs agent status`: one agent's identity, backend, links and DC table.
import { controlRequest } from '../agent/control.js';
import type { AgentStatus } from '../agent/agent.js';
import { expectArgs, type Flags } from './args.js';
import { printJson, table, target, TARGET_FLAGS } from './format.js';

export const statusHelp = 'agent status [--node N] [--namespace NS] [--json]    the agent of node N: address, backend, links, DC table';

export async function status(f: Flags): Promise<number> {
  expectArgs(f, statusHelp, { values: TARGET_FLAGS, booleans: ['json'] });
  const { node, ns } = target(f);
  const s = (await controlRequest(ns, node, 'status')) as AgentStatus;
  if (f.flags.has('json')) {
    printJson(s);
    return 0;
  }
  process.stdout.write(
    `agent of node ${s.node}, namespace ${s.namespace}: pid ${s.pid}, listening on ${s.listen}, ${s.registry} registry\n` +
      `incarnation ${s.incarnation}, started ${s.startedAt}, ${s.clients} attached process${s.clients === 1 ? '' : 'es'}\n`,
  );
  if (s.peers.length) process.stdout.write(table([['PEER', 'ADDRESS', 'LINK', 'INCARNATION', 'ENDPOINTS'], ...s.peers.map((p) => [String(p.node), p.address, p.up ? 'up' : 'down', String(p.incarnation), String(p.endpoints)])]));
  for (const d of s.dcs) process.stdout.write(`DC ${d.dc}: nodes ${d.nodes.join(',') || '(none)'} (version ${d.version})\n`);
  return 0;
}
