// dc.ts — `dvs dc`: the cluster's DC table (which nodes each DC spans), read
// and changed through node N's agent. The change reaches every agent; a bind
// or a message in a DC on a node outside it then fails with EDVSNODCNODE.
import { controlRequest } from '../agent/control.js';
import type { DcInfo } from '../dc/dc-table.js';
import { DvsError } from '../errors.js';
import { checkDc, checkNode } from '../validate.js';
import { expectArgs, intArg, type Flags } from './args.js';
import { printJson, table, target, TARGET_FLAGS } from './format.js';

const T = '[--node N] [--namespace NS] [--json]';
export const dcHelp =
  `dc list ${T}    the DC table: each DC and its nodes\n` +
  `  dvs dc create DC --nodes N,N... ${T}    a new DC spanning those nodes\n` +
  `  dvs dc add-node DC NODE ${T}    let NODE use DC\n` +
  `  dvs dc remove-node DC NODE ${T}    (EDVSBUSY while NODE has endpoints bound in DC)`;

const dcArg = (s: string | undefined): number => checkDc(intArg(s, 'DC'));
const nodeArg = (s: string | undefined): number => checkNode(intArg(s, 'NODE'));

function show(d: DcInfo): string {
  return `DC ${d.dc}: nodes ${d.nodes.join(',') || '(none)'} (version ${d.version})\n`;
}

export async function dc(f: Flags): Promise<number> {
  const [sub, ...args] = f.positional;
  const rest: Flags = { ...f, positional: args };
  const { node, ns } = target(f);
  const json = f.flags.has('json');
  let r: DcInfo;
  switch (sub) {
    case 'list': {
      expectArgs(rest, 'dc list ' + T, { values: TARGET_FLAGS, booleans: ['json'] });
      const { dcs } = (await controlRequest(ns, node, 'dcs')) as { dcs: DcInfo[] };
      if (json) printJson({ node, namespace: ns, dcs });
      else if (!dcs.length) process.stdout.write(`no DC table entries (agent of node ${node}, namespace ${ns}): every DC is open to every node\n`);
      else process.stdout.write(table([['DC', 'NODES', 'VERSION'], ...dcs.map((d) => [String(d.dc), d.nodes.join(',') || '-', String(d.version)])]));
      return 0;
    }
    case 'create': {
      expectArgs(rest, `dc create DC --nodes N,N... ${T}`, { values: [...TARGET_FLAGS, 'nodes'], booleans: ['json'], min: 1, max: 1 });
      const d = dcArg(args[0]);
      const list = f.values.get('nodes');
      if (list === undefined) throw new DvsError('EDVSINVAL', 'dc create needs --nodes N,N...');
      const nodes = list.split(',').map((s) => nodeArg(s.trim()));
      r = (await controlRequest(ns, node, 'dc-create', { dc: d, nodes })) as DcInfo;
      break;
    }
    case 'add-node':
    case 'remove-node': {
      expectArgs(rest, `dc ${sub} DC NODE ${T}`, { values: TARGET_FLAGS, booleans: ['json'], min: 2, max: 2 });
      const d = dcArg(args[0]);
      const n = nodeArg(args[1]);
      r = (await controlRequest(ns, node, sub === 'add-node' ? 'dc-add-node' : 'dc-remove-node', { dc: d, node: n })) as DcInfo;
      break;
    }
    default:
      throw new DvsError('EDVSINVAL', sub === undefined ? 'dc needs a subcommand: list, create, add-node or remove-node' : `unknown dc subcommand '${sub}' (list, create, add-node, remove-node)`);
  }
  if (json) printJson(r);
  else process.stdout.write(show(r));
  return 0;
}
