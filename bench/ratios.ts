import { formatSize } from './stats.js';
import type { MetricRow } from './suite.js';
import { renderTable } from './table.js';

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

const formatRatio = (value: number | null | undefined): string => (value === null || value === undefined ? '-' : `${value.toFixed(2)}x`);

/**
 * The ratios as two plain-text tables (rows = "subject / baseline", columns =
 * sizes); empty when there is no subject row.
 */
export function renderRatioTables(ratios: Ratios): string {
  const sizes = [...new Set(Object.values(ratios).flatMap((bySize) => Object.keys(bySize)))].sort((a, b) => Number(a) - Number(b));
  const pairs = Object.entries(ratios).flatMap(([subject, bySize]) =>
    [...new Set(Object.values(bySize).flatMap((byBase) => Object.keys(byBase)))].map((base) => ({ subject, base, bySize })),
  );
  if (pairs.length === 0) return '';
  const header = ['subject / baseline', ...sizes.map((size) => formatSize(Number(size)))];
  const table = (title: string, key: keyof Ratio): string =>
    renderTable(
      title,
      header,
      pairs.map(({ subject, base, bySize }) => [`${subject} / ${base}`, ...sizes.map((size) => formatRatio(bySize[size]?.[base]?.[key]))]),
    );
  return [table('RTT p50 ratio (< 1: subject faster)', 'rtt_p50'), table('msgs/s ratio (> 1: subject faster)', 'msgs_per_s')].join('\n');
}
