#!/usr/bin/env node
// dvs — command-line entry point: one file per command in this folder.
import { DvsError } from '../errors.js';
import { parseArgs, type Flags } from './args.js';
import { demo, demoHelp, demoPeer } from './demo.js';
import { demoClient } from './demo-client.js';
import { agent, agentHelp } from './agent.js';
import { dc, dcHelp } from './dc.js';
import { lookup, lookupHelp } from './lookup.js';
import { migrate, migrateHelp } from './migrate.js';
import { nodes, nodesHelp } from './nodes.js';
import { ps, psHelp } from './ps.js';
import { serve, serveHelp } from './serve.js';
import { status, statusHelp } from './status.js';

const commands: Record<string, { run: (f: Flags) => Promise<number>; help: string }> = {
  demo: { run: demo, help: demoHelp },
  agent: { run: (f) => (f.positional[0] === 'status' ? status({ ...f, positional: f.positional.slice(1) }) : agent(f)), help: `${agentHelp}\n  dvs ${statusHelp}` },
  nodes: { run: nodes, help: nodesHelp },
  ps: { run: ps, help: psHelp },
  dc: { run: dc, help: dcHelp },
  lookup: { run: lookup, help: lookupHelp },
  migrate: { run: migrate, help: migrateHelp },
  serve: { run: serve, help: serveHelp },
  'demo-peer': { run: demoPeer, help: '' },
  'demo-client': { run: demoClient, help: '' },
};

function usage(): string {
  const lines = Object.values(commands)
    .filter((c) => c.help)
    .map((c) => `  dvs ${c.help}`);
  return `usage:\n${lines.join('\n')}\n\nThe commands that ask an agent take --node N (default $DVS_NODE or 0) and --namespace NS; --json prints JSON.\nErrors: "dvs: CODE: message" on stderr, exit status 1.\n`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  const cmd = commands[name];
  if (!cmd) {
    process.stderr.write(`dvs: unknown command '${name}'\n${usage()}`);
    return 2;
  }
  return cmd.run(parseArgs(rest));
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`dvs: ${e instanceof DvsError || e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
