#!/usr/bin/env node
// dvs — command-line entry point: one file per command in this folder.
import { DvsError } from '../errors.js';
import { parseArgs, type Flags } from './args.js';
import { demo, demoPeer } from './demo.js';
import { agent, agentHelp } from './agent.js';
import { nodes, nodesHelp } from './nodes.js';
import { ps } from './ps.js';

const commands: Record<string, { run: (f: Flags) => Promise<number>; help: string }> = {
  demo: { run: demo, help: 'demo [--seconds N] [--size BYTES]    ping-pong between two processes, live latency' },
  agent: { run: agent, help: agentHelp },
  ps: { run: ps, help: 'ps [--node N] [--namespace NS] [--json]    the node\'s endpoint table (local and remote endpoints)' },
  nodes: { run: nodes, help: nodesHelp },
  'demo-peer': { run: demoPeer, help: '' },
};

function usage(): string {
  const lines = Object.values(commands)
    .filter((c) => c.help)
    .map((c) => `  dvs ${c.help}`);
  return `usage:\n${lines.join('\n')}\n`;
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
