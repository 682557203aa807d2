/**
 * Baselines: the `zeromq` package over an ipc:// endpoint in a temp dir
 * (`zeromq-ipc`) or over tcp://127.0.0.1 on a port the peer picks
 * (`zeromq-tcp`, TCP_NODELAY is zeromq's default); Request/Reply for RTT,
 * Push/Pull for throughput (`await send` is the back-pressure, with
 * high-water marks sized to ~8 MiB of messages).
 * zeromq is imported lazily so a missing native addon fails only these rows.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { withProcessPeer, type Peer } from '../peer.js';
import { checkReply, checkSink, inFlightLimit, makePayload, type Role } from '../protocol.js';
import { timeRoundTrips } from '../rtt.js';
import { streamMeasured } from '../stream.js';
import { withTempDir } from '../tempdir.js';
import type { Transport } from '../transport.js';

type Zmq = typeof import('zeromq');
export type ZeromqEndpointKind = 'ipc' | 'tcp';

/** Closes `socket` when the trial ends, which also rejects its pending sends and receives. */
function closeWhenDone<S extends { close(): void }>(socket: S, signal: AbortSignal): S {
  signal.addEventListener('abort', () => socket.close(), { once: true });
  return socket;
}

/** Runs `fn` with the address to bind: a fresh ipc:// path in a temp dir, or a wildcard TCP port on loopback. */
function withBindAddress<T>(kind: ZeromqEndpointKind, fn: (bindAddress: string) => Promise<T>): Promise<T> {
  if (kind === 'tcp') return fn('tcp://127.0.0.1:*');
  return withTempDir((dir) => fn(`ipc://${join(dir, 'peer.ipc')}`));
}

/** Starts the zeromq peer bound to a fresh endpoint and runs `fn` against the address it reports. */
async function withEndpoint<T>(
  kind: ZeromqEndpointKind,
  role: Role,
  size: number,
  fn: (zmq: Zmq, address: string, peer: Peer<ChildProcess>) => Promise<T>,
): Promise<T> {
  const zmq = await import('zeromq');
  return withBindAddress(kind, (bindAddress) => {
    const args = [role, bindAddress, String(inFlightLimit(size))];
    return withProcessPeer('zeromq', args, 'json', (peer) => {
      if (peer.address === undefined) throw new Error('zeromq peer did not report its endpoint');
      return fn(zmq, peer.address, peer);
    });
  });
}

function zeromqTransport(kind: ZeromqEndpointKind): Transport {
  return {
    name: `zeromq-${kind}`,

    rtt(size, iters) {
      return withEndpoint(kind, 'echo', size, (zmq, address, peer) => {
        const req = closeWhenDone(new zmq.Request({ linger: 0 }), peer.signal);
        req.connect(address);
        const msg = makePayload(size);
        return timeRoundTrips(iters, async () => {
          await req.send(msg);
          const [reply] = await req.receive();
          checkReply(reply, size);
        });
      });
    },

    throughput(size, opts) {
      return withEndpoint(kind, 'sink', size, async (zmq, address, peer) => {
        const push = closeWhenDone(new zmq.Push({ linger: 0, sendHighWaterMark: inFlightLimit(size) }), peer.signal);
        push.connect(address);
        const msg = makePayload(size);
        const endMarker = new Uint8Array(0);
        const sent = await streamMeasured(opts, peer.signal, () => push.send(msg), () => push.send(endMarker));
        return checkSink(await peer.result(), sent, size);
      });
    },
  };
}

export const zeromqIpc = zeromqTransport('ipc');
export const zeromqTcp = zeromqTransport('tcp');
