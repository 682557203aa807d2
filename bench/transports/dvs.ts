/**
 * dvs transports: `dvs-spin` (callSync/receiveSync busy-polling on both
 * sides), `dvs-async` (promises and the event loop; the library's default
 * adaptive polling before sleeping) and `dvs-async-sleep` (async with polling
 * disabled: every wait sleeps in epoll and is woken by a doorbell).
 * The harness attaches first and detaches after the peer is gone, so the
 * arena (and its /dev/shm segment) never outlives the trial.
 */
import type { ChildProcess } from 'node:child_process';
import { attach, type Endpoint } from '../../lib/index.js';
import { withProcessPeer, type Peer } from '../peer.js';
import { checkReply, checkSink, makePayload, type Role } from '../protocol.js';
import { timeRoundTrips, timeRoundTripsSync } from '../rtt.js';
import { streamMeasured } from '../stream.js';
import type { Transport } from '../transport.js';

export type DvsMode = 'spin' | 'async' | 'async-sleep';
const PEER_EP = 1;
const HARNESS_EP = 2;
let trials = 0;

function asyncSpinUs(mode: DvsMode): number | undefined {
  return mode === 'async-sleep' ? 0 : undefined;
}

async function withDvs<T>(mode: DvsMode, role: Role, fn: (ep: Endpoint, peer: Peer<ChildProcess>) => Promise<T>): Promise<T> {
  const namespace = `bench-${process.pid}-${trials++}`;
  const node = attach({ node: 1, namespace, asyncSpinUs: asyncSpinUs(mode) });
  try {
    return await withProcessPeer('dvs', [role, mode, namespace, String(PEER_EP)], 'json', (peer) =>
      fn(node.bind(0, HARNESS_EP), peer),
    );
  } finally {
    node.detach();
  }
}

function dvsTransport(name: string, mode: DvsMode): Transport {
  return {
    name,
    rtt(size, iters) {
      return withDvs(mode, 'echo', (ep) => {
        const payload = makePayload(size);
        if (mode === 'spin')
          return Promise.resolve(
            timeRoundTripsSync(iters, () => {
              const r = ep.callSync(PEER_EP, payload, { spinUs: Infinity });
              checkReply(r.payload, size);
              r.release();
            }),
          );
        return timeRoundTrips(iters, async () => {
          const r = await ep.call(PEER_EP, payload);
          checkReply(r.payload, size);
          r.release();
        });
      });
    },
    throughput(size, opts) {
      return withDvs(mode, 'sink', async (ep, peer) => {
        const payload = makePayload(size);
        const send =
          mode === 'spin'
            ? (): true => {
                ep.sendSync(PEER_EP, payload);
                return true;
              }
            : (): true | Promise<unknown> => ep.trySend(PEER_EP, payload) || ep.send(PEER_EP, payload);
        const sent = await streamMeasured(opts, peer.signal, send, () => ep.send(PEER_EP));
        return checkSink(await peer.result(), sent, size);
      });
    },
  };
}

export const dvsSpin = dvsTransport('dvs-spin', 'spin');
export const dvsAsync = dvsTransport('dvs-async', 'async');
export const dvsAsyncSleep = dvsTransport('dvs-async-sleep', 'async-sleep');
