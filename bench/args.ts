import { parseArgs } from 'node:util';
import { UsageError } from './suite.js';

export interface CliArgs {
  readonly suite: string;
  readonly quick: boolean;
  readonly json: string | undefined;
  readonly only: readonly string[] | undefined;
  readonly sizes: readonly number[] | undefined;
}

export const USAGE =
  `usage: node dist/bench/main.js <suite> [--quick] [--json FILE] [--only t1,t2] [--sizes 64,4096]\n` +
  `       (membership suite: --sizes are cluster sizes in agents, default 3,5,10; --only embedded,etcd)`;

const MAX_SIZE = 1 << 30;

function list(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (items.length === 0) throw new UsageError('empty list');
  return items;
}

function sizes(value: string | undefined): number[] | undefined {
  return list(value)?.map((item) => {
    const n = Number(item);
    if (!Number.isInteger(n) || n < 1 || n > MAX_SIZE) throw new UsageError(`--sizes: not a size in bytes (1..${MAX_SIZE}): ${item}`);
    return n;
  });
}

export function parseCli(argv: readonly string[]): CliArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        quick: { type: 'boolean', default: false },
        json: { type: 'string' },
        only: { type: 'string' },
        sizes: { type: 'string' },
      },
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const [suite, ...extra] = parsed.positionals;
  if (suite === undefined) throw new UsageError('missing suite name');
  if (extra.length > 0) throw new UsageError(`unexpected arguments: ${extra.join(' ')}`);
  const { quick, json, only, sizes: sizeList } = parsed.values;
  return { suite, quick: quick === true, json, only: list(only), sizes: sizes(sizeList) };
}
