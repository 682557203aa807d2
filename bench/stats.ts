/** Nearest-rank percentile (`p` in 0..100] of `samples`, computed on a sorted copy. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) throw new Error('percentile of an empty sample set');
  if (!(p > 0 && p <= 100)) throw new RangeError(`percentile out of range: ${p}`);
  const sorted = Float64Array.from(samples).sort();
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[rank - 1];
}

/** Nearest-rank p50 (for an even count this is the lower of the two middle values). */
export function median(samples: readonly number[]): number {
  return percentile(samples, 50);
}

/** Messages per second from a receiver-side count and its span (first message to end marker). */
export function messageRate(msgs: number, seconds: number): number {
  if (msgs < 2 || !(seconds > 0)) throw new Error(`too few messages to compute a rate (${msgs} in ${seconds} s)`);
  return msgs / seconds;
}

/** Microseconds with two decimals, e.g. `23.41`. */
export function formatUs(us: number): string {
  return us.toFixed(2);
}

/** Messages per second with a k/M suffix, e.g. `412.3k`, `1.25M`. */
export function formatRate(perSecond: number): string {
  if (perSecond >= 1e6) return `${(perSecond / 1e6).toFixed(2)}M`;
  if (perSecond >= 1e3) return `${(perSecond / 1e3).toFixed(1)}k`;
  return perSecond.toFixed(0);
}

/** Gigabytes (10^9 bytes) per second, e.g. `2.345`. */
export function formatGBps(gbPerSecond: number): string {
  return gbPerSecond.toFixed(3);
}

/** Message size label in binary units, e.g. `64 B`, `4 KiB`, `1 MiB`. */
export function formatSize(bytes: number): string {
  if (bytes >= 1 << 20 && bytes % (1 << 20) === 0) return `${bytes / (1 << 20)} MiB`;
  if (bytes >= 1 << 10 && bytes % (1 << 10) === 0) return `${bytes / (1 << 10)} KiB`;
  return `${bytes} B`;
}
