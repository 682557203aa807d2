// args.ts — minimal flag parsing for the CLI: --name value, --flag, positionals.
import { DvsError } from '../errors.js';

export interface Flags {
  positional: string[];
  values: Map<string, string>;
  flags: Set<string>;
}

/** Flags that never take a value (`--json 5` leaves 5 a positional argument). */
const BOOLEAN_FLAGS = new Set(['json', 'local', 'standby']);

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
    else if (!BOOLEAN_FLAGS.has(a.slice(2)) && i + 1 < argv.length && !argv[i + 1].startsWith('--')) f.values.set(a.slice(2), argv[++i]);
    else f.flags.add(a.slice(2));
  }
  return f;
}

/**
 * Refuses what a command does not take: unknown flags, a value on a boolean
 * flag (or none on a valued one), and a number of positional arguments
 * outside [min, max].
 */
export function expectArgs(f: Flags, help: string, o: { values?: string[]; booleans?: string[]; min?: number; max?: number }): void {
  const usage = help.split('    ')[0];
  const values = new Set(o.values ?? []);
  const booleans = new Set(o.booleans ?? []);
  for (const k of f.values.keys()) {
    if (booleans.has(k)) throw new DvsError('EDVSINVAL', `--${k} takes no value (usage: dvs ${usage})`);
    if (!values.has(k)) throw new DvsError('EDVSINVAL', `unknown flag --${k} (usage: dvs ${usage})`);
  }
  for (const k of f.flags) {
    if (values.has(k)) throw new DvsError('EDVSINVAL', `--${k} needs a value (usage: dvs ${usage})`);
    if (!booleans.has(k)) throw new DvsError('EDVSINVAL', `unknown flag --${k} (usage: dvs ${usage})`);
  }
  const n = f.positional.length;
  if (n < (o.min ?? 0) || n > (o.max ?? 0)) throw new DvsError('EDVSINVAL', `${n < (o.min ?? 0) ? 'missing' : 'unexpected'} arguments (usage: dvs ${usage})`);
}

/** A non-negative integer argument, as the user typed it (no '1e3', ' 7', '0x10'). */
export function intArg(s: string | undefined, what: string): number {
  if (s === undefined || !/^\d{1,10}$/.test(s)) throw new DvsError('EDVSINVAL', `${what} must be a non-negative integer, got ${s === undefined ? 'nothing' : `'${s}'`}`);
  return Number(s);
}

export function intFlag(f: Flags, name: string, def: number, min: number, max: number): number {
  const v = f.values.get(name);
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new DvsError('EDVSINVAL', `--${name} must be an integer in [${min}, ${max}]`);
  return n;
}
