import type { MetricRow } from './suite.js';

/** Both ratios are subject ÷ baseline: `rtt_p50` < 1 and `msgs_per_s` > 1 mean the subject is faster. */
export interface Ratio {
  readonly rtt_p50: number | null;
  readonly msgs_per_s: number | null;
}

/** subject transport → size (as a string key) → baseline transport → ratio. */
export type Ratios = Record<string, Record<string, Record<string, Ratio>>>;

export function isDvs(transport: string): boolean {
  return transport.startsWith('dvs-');
}

function divide(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : Number((a / b).toPrecision(4));
}

/**
 * Compares every subject row (default: `dvs-*` transports) with every
 * non-subject row of the same size from the same run.
 */
export function computeRatios(rows: readonly MetricRow[], isSubject: (transport: string) => boolean = isDvs): Ratios {
  const ratios: Ratios = {};
  for (const subject of rows.filter((r) => isSubject(r.transport))) {
    const bySize = (ratios[subject.transport] ??= {});
    for (const base of rows.filter((r) => !isSubject(r.transport) && r.size === subject.size)) {
      (bySize[String(subject.size)] ??= {})[base.transport] = {
        rtt_p50: divide(subject.rtt_p50_us, base.rtt_p50_us),
        msgs_per_s: divide(subject.msgs_per_s, base.msgs_per_s),
      };
    }
  }
  return ratios;
}
