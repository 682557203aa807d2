// lookup.ts — `dvs lookup DC NAME`: where the endpoint bound with that name
// is (node, endpoint number, pid), from node N's agent's directory.
import { controlRequest } from '../agent/control.js';
import type { ClusterEntry } from '../cluster/cluster.js';
import { DvsError } from '../errors.js';
import { checkDc, checkName } from '../validate.js';
import { expectArgs, intArg, type Flags } from './args.js';
import { printJson, target, TARGET_FLAGS } from './format.js';

export const lookupHelp = 'lookup DC NAME [--node N] [--namespace NS] [--json]    where the endpoint named NAME in DC is bound';

export async function lookup(f: Flags): Promise<number> {
  expectArgs(f, lookupHelp, { values: TARGET_FLAGS, booleans: ['json'], min: 2, max: 2 });
  const dc = checkDc(intArg(f.positional[0], 'DC'));
  const name = checkName(f.positional[1]);
  const { node, ns } = target(f);
  const { entry } = (await controlRequest(ns, node, 'lookup', { dc, name })) as { entry: ClusterEntry | null };
  if (!entry) throw new DvsError('EDVSNOTBIND', `no endpoint named ${JSON.stringify(name)} in DC ${dc}`);
  if (f.flags.has('json')) printJson(entry);
  else process.stdout.write(`DC ${entry.dc} ${JSON.stringify(entry.name)}: endpoint ${entry.ep} on node ${entry.node} (pid ${entry.pid}, generation ${entry.gen})\n`);
  return 0;
}
