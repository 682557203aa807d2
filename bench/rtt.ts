/**
 * Warm-up before timing: at least WARMUP_ROUNDS round trips and WARMUP_NS of
 * wall time. Both sides' JIT and, on VMs, the CPU idle/wake-up path need a
 * few thousand small round trips before latency settles.
 */
const WARMUP_ROUNDS = 50;
const WARMUP_NS = 250_000_000n;

/**
 * Warms up, then makes `iters` timed calls of `roundTrip` (one send and its
 * full reply) and returns each duration in microseconds.
 */
export async function timeRoundTrips(iters: number, roundTrip: () => Promise<void>): Promise<number[]> {
  const warmStart = process.hrtime.bigint();
  for (let i = 0; i < WARMUP_ROUNDS || process.hrtime.bigint() - warmStart < WARMUP_NS; i++) await roundTrip();
  const samples = new Array<number>(iters);
  for (let i = 0; i < iters; i++) {
    const start = process.hrtime.bigint();
    await roundTrip();
    samples[i] = Number(process.hrtime.bigint() - start) / 1e3;
  }
  return samples;
}

/** The same for a synchronous round trip (spin transports): no promise per sample. */
export function timeRoundTripsSync(iters: number, roundTrip: () => void): number[] {
  const warmStart = process.hrtime.bigint();
  for (let i = 0; i < WARMUP_ROUNDS || process.hrtime.bigint() - warmStart < WARMUP_NS; i++) roundTrip();
  const samples = new Array<number>(iters);
  for (let i = 0; i < iters; i++) {
    const start = process.hrtime.bigint();
    roundTrip();
    samples[i] = Number(process.hrtime.bigint() - start) / 1e3;
  }
  return samples;
}
