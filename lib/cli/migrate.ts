// migrate.ts — `dvs migrate DC EP --to NODE`: moves a service endpoint (run
// by `dvs serve`) to another node of its DC while its clients keep working;
// asked through node N's agent (any node: the request goes on to the
// endpoint's own agent, which runs the migration). `--list`: the migrations
// node N's agent ran and takes part in, and the services registered there.
import { controlRequest } from '../agent/control.js';
import type { MigrationRecord, MigrationsList } from '../migration/index.js';
import { METHODS } from '../migration/protocol.js';
import { DvsError } from '../errors.js';
import { checkDc, checkEp, checkNode } from '../validate.js';
import { expectArgs, intArg, intFlag, type Flags } from './args.js';
import { printJson, table, target, TARGET_FLAGS } from './format.js';

export const migrateHelp =
  'migrate DC EP --to NODE [--method state] [--quiesce-timeout-ms MS] [--node N] [--namespace NS] [--json]    move a service endpoint to NODE\n' +
  '  dvs migrate --list [--node N] [--namespace NS] [--json]    migrations run by node N\'s agent, those in progress, its services';

const ms = (x: number | undefined): string => (x === undefined ? '-' : x < 10 ? `${x.toFixed(2)} ms` : `${x.toFixed(1)} ms`);

function bytes(n: number | undefined): string {
  if (n === undefined) return '-';
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/** One line per migration: from → to, downtime, messages held. */
export function describeMigration(r: MigrationRecord): string {
  const head = `endpoint ${r.ep} of DC ${r.dc}: node ${r.from} → node ${r.to} (${r.method})`;
  if (r.state !== 'committed') return `${head}: ${r.state}${r.error ? ` (${r.error.code}: ${r.error.message})` : ''}`;
  return (
    `${head}: downtime ${ms(r.downtimeMs)}, total ${ms(r.totalMs)}, ` +
    `${r.messages ?? '?'} messages held and moved (${r.calls ?? 0} calls), image ${bytes(r.imageBytes)}, ` +
    `senders held on node${r.fenced.length === 1 ? '' : 's'} ${[r.from, ...r.fenced].join(',')}; new pid ${r.pid}`
  );
}

export async function migrate(f: Flags): Promise<number> {
  const { node, ns } = target(f);
  const json = f.flags.has('json');
  if (f.flags.has('list')) {
    expectArgs(f, migrateHelp.split('\n')[1].trim().replace(/^dvs /, ''), { values: TARGET_FLAGS, booleans: ['json', 'list'] });
    const l = (await controlRequest(ns, node, 'migrations')) as MigrationsList;
    if (json) {
      printJson({ namespace: ns, ...l });
      return 0;
    }
    process.stdout.write(`migrations run by node ${node}'s agent (namespace ${ns})\n`);
    if (!l.records.length) process.stdout.write('  none\n');
    for (const r of l.records) process.stdout.write(`  #${r.id} ${r.startedAt} ${describeMigration(r)}\n`);
    if (l.active.length) process.stdout.write(table([['IN PROGRESS', 'DC', 'ENDPOINT', 'ROLE', 'SOURCE'], ...l.active.map((a) => [`#${a.id}`, String(a.dc), String(a.ep), a.role, String(a.src)])]));
    process.stdout.write(l.services.length ? table([['SERVICE DC', 'ENDPOINT', 'NAME', 'PID', 'MODULE'], ...l.services.map((s) => [String(s.dc), String(s.ep), s.name || '-', String(s.pid), s.module])]) : 'no dvs serve services on this node\n');
    return 0;
  }
  expectArgs(f, migrateHelp, { values: [...TARGET_FLAGS, 'to', 'method', 'quiesce-timeout-ms'], booleans: ['json'], min: 2, max: 2 });
  const dc = checkDc(intArg(f.positional[0], 'DC'));
  const ep = checkEp(intArg(f.positional[1], 'EP'));
  const toArg = f.values.get('to');
  if (toArg === undefined) throw new DvsError('EDVSINVAL', 'migrate needs --to NODE');
  const to = checkNode(intArg(toArg, '--to'));
  const method = f.values.get('method') ?? 'state';
  if (!(METHODS as readonly string[]).includes(method)) throw new DvsError('EDVSINVAL', `--method must be one of ${METHODS.join(', ')}, got '${method}'`);
  const args: Record<string, unknown> = { dc, ep, to, method };
  if (f.values.has('quiesce-timeout-ms')) args.quiesceTimeoutMs = intFlag(f, 'quiesce-timeout-ms', 5000, 1, 600000);
  const r = (await controlRequest(ns, node, 'migrate', args, 130_000)) as MigrationRecord;
  if (json) printJson({ namespace: ns, ...r });
  else process.stdout.write(`migrated ${describeMigration(r)}\n`);
  return 0;
}
