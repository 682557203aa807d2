// args.ts — minimal flag parsing for the CLI: --name value, --flag, positionals.
import { DvsError } from '../errors.js';

export interface Flags {
  positional: string[];
  values: Map<string, string>;
  flags: Set<string>;
}

export function parseArgs(argv: string[]): Flags {
  const f: Flags = { positional: [], values: new Map(), flags: new Set() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      f.positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    if (eq > 0) f.values.set(a.slice(2, eq), a.slice(eq + 1));
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) f.values.set(a.slice(2), argv[++i]);
    else f.flags.add(a.slice(2));
  }
  return f;
}

export function intFlag(f: Flags, name: string, def: number, min: number, max: number): number {
  const v = f.values.get(name);
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new DvsError('EDVSINVAL', `--${name} must be an integer in [${min}, ${max}]`);
  return n;
}
