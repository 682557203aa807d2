/** Renders a titled plain-text table: first column left-aligned, the rest right-aligned. */
export function renderTable(title: string, header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, col) => Math.max(h.length, ...rows.map((row) => (row[col] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    widths.map((w, col) => (col === 0 ? (cells[col] ?? '').padEnd(w) : (cells[col] ?? '').padStart(w))).join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [title, line(header), rule, ...rows.map(line)].join('\n') + '\n';
}
