/**
 * Baseline: the `zeromq` package over an ipc:// endpoint in a temp dir;
 * Request/Reply for RTT, Push/Pull for throughput (`await send` is the
 * back-pressure, with high-water marks sized to ~8 MiB of messages).
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

/** Closes `socket` when the trial ends, which also rejects its pending sends and receives. */
function closeWhenDone<S extends { close(): void }>(socket: S, signal: AbortSignal): S {
  signal.addEventListener('abort', () => socket.close(), { once: true });
  return socket;
}

/** Starts the zeromq peer bound to a fresh ipc:// address in a temp dir and runs `fn` against it. */
async function withEndpoint<T>(
  role: Role,
  size: number,
  fn: (zmq: Zmq, address: string, peer: Peer<ChildProcess>) => Promise<T>,
): Promise<T> {
  const zmq = await import('zeromq');
  return withTempDir((dir) => {
    const address = `ipc://${join(dir, 'peer.ipc')}`;
    const args = [role, address, String(inFlightLimit(size))];
    return withProcessPeer('zeromq', args, 'json', (peer) => fn(zmq, address, peer));
  });
}

export const zeromqIpc: Transport = {
  name: 'zeromq-ipc',

  rtt(size, iters) {
    return withEndpoint('echo', size, (zmq, address, peer) => {
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
    return withEndpoint('sink', size, async (zmq, address, peer) => {
      const push = closeWhenDone(new zmq.Push({ linger: 0, sendHighWaterMark: inFlightLimit(size) }), peer.signal);
      push.connect(address);
      const msg = makePayload(size);
      const endMarker = new Uint8Array(0);
      const sent = await streamMeasured(opts, peer.signal, () => push.send(msg), () => push.send(endMarker));
      return checkSink(await peer.result(), sent, size);
    });
  },
};
