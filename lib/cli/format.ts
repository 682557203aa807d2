// format.ts — what the CLI's read-only commands share: which agent to ask
// (--node, --namespace) and how to print (aligned columns, or JSON).
import { defaultNamespace } from '../agent/control.js';
import { intFlag, type Flags } from './args.js';

/** Flags every agent-querying command takes. */
export const TARGET_FLAGS = ['node', 'namespace'];

/** The agent to ask: --node (default $DVS_NODE or 0) in --namespace (default $DVS_NAMESPACE or "default"). */
export function target(f: Flags): { node: number; ns: string } {
  return { node: intFlag(f, 'node', Number(process.env.DVS_NODE ?? 0), 0, 1023), ns: defaultNamespace(f.values.get('namespace')) };
}

/** Left-aligned columns; the first row is the header. */
export function table(rows: string[][]): string {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd() + '\n').join('');
}

export function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n');
}
