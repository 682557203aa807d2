/**
 * HOOK for the dvs cluster transport (filled in by its author): the `udp`
 * suite measures whatever this returns, first in its tables, and compares
 * every `dvs-` row with every baseline of the same size (`ratios`).
 *
 * Expected rows, two agents on this machine talking over UDP on 127.0.0.1:
 * - `dvs-udp`: the default (async) API;
 * - `dvs-udp-spin`: the busy-polling sync API;
 * - `dvs-udp-loss5`: `dvs-udp` with 5 % of datagrams dropped on purpose
 *   (throughput and RTT under loss: retransmission at work).
 * Each is a `Transport` (see `../transport.ts`; `transports/dvs.ts` is the
 * shared-memory version to start from). Return `{ samples, lost }` from
 * `rtt` and `lost` in the `ThroughputResult`: datagrams dropped on the wire
 * (injected drops included) and recovered, as the transport counts them; the
 * suite adds them up into the row's `lost`. Every message must still arrive
 * (`checkSink`): dvs-udp is reliable.
 */
import type { Transport } from '../transport.js';

export function dvsUdpTransports(): Transport[] {
  // Nothing yet: the cluster transport is being built.
  return [];
}
