/** Benchmark entry point: `node dist/bench/main.js <suite> [--quick] [--json FILE] [--only ...] [--sizes ...]`. */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { parseCli, USAGE } from './args.js';
import { hostInfo } from './host.js';
import { UsageError, type Suite } from './suite.js';
import { localSuite } from './suites/local.js';
import { membershipSuite } from './suites/membership.js';
import { migrationSuite } from './suites/migration.js';
import { udpSuite } from './suites/udp.js';

const SUITES: ReadonlyMap<string, Suite> = new Map([localSuite, udpSuite, membershipSuite, migrationSuite].map((suite) => [suite.name, suite]));

async function main(argv: readonly string[]): Promise<number> {
  const args = parseCli(argv);
  const suite = SUITES.get(args.suite);
  if (suite === undefined) {
    process.stderr.write(`unknown suite "${args.suite}" (available: ${[...SUITES.keys()].join(', ')})\n`);
    return 2;
  }
  const host = hostInfo();
  const started = performance.now();
  const run = await suite.run(args, (line) => process.stderr.write(`[${suite.name}] ${line}\n`));
  const wall = (performance.now() - started) / 1000;
  process.stdout.write(`suite ${suite.name}${args.quick ? ' (quick)' : ''} on ${host.cpus}x ${host.model}, kernel ${host.kernel}, node ${host.node}\n\n`);
  process.stdout.write(run.text);
  process.stdout.write(`\nwall time ${wall.toFixed(1)} s\n`);
  if (args.json !== undefined) {
    const doc = { suite: suite.name, host, quick: args.quick, ...run.json };
    await mkdir(dirname(args.json), { recursive: true });
    await writeFile(args.json, JSON.stringify(doc, null, 2) + '\n');
  }
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  if (!(err instanceof UsageError)) throw err;
  process.stderr.write(`${err.message}\n${USAGE}\n`);
  process.exitCode = 2;
}
