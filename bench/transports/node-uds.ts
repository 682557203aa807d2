/** Baseline: `net` over a Unix domain socket in a temp dir, length-prefixed frames. */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { encodeFrame, FrameDecoder } from '../framing.js';
import { Mailbox } from '../mailbox.js';
import { withProcessPeer, type Peer } from '../peer.js';
import { checkReply, checkSink, makePayload, type Role } from '../protocol.js';
import { timeRoundTrips } from '../rtt.js';
import { streamMeasured } from '../stream.js';
import { withTempDir } from '../tempdir.js';
import type { Transport } from '../transport.js';

const END_MARKER = encodeFrame(new Uint8Array(0));

/**
 * Starts the uds peer listening in a temp dir and runs `fn` with a socket
 * connected to it; a socket error fails the trial, and its end closes the socket.
 */
function withSocket<T>(role: Role, fn: (socket: Socket, peer: Peer<ChildProcess>) => Promise<T>): Promise<T> {
  return withTempDir((dir) => {
    const path = join(dir, 'peer.sock');
    return withProcessPeer('uds', [role, path], 'json', async (peer) => {
      const socket = connect(path);
      peer.signal.addEventListener('abort', () => socket.destroy(), { once: true });
      const broken = new Promise<never>((_, reject) => socket.on('error', reject));
      await Promise.race([once(socket, 'connect'), broken]);
      return Promise.race([fn(socket, peer), broken]);
    });
  });
}

export const nodeUds: Transport = {
  name: 'node-uds',

  rtt(size, iters) {
    return withSocket('echo', (socket, peer) => {
      const replies = new Mailbox<Buffer>(peer.signal);
      const decoder = new FrameDecoder((payload) => replies.deliver(payload));
      socket.on('data', (chunk: Buffer) => decoder.push(chunk));
      socket.on('close', () => replies.fail(new Error('socket closed')));
      const frame = encodeFrame(makePayload(size));
      return timeRoundTrips(iters, async () => {
        socket.write(frame);
        checkReply(await replies.next(), size);
      });
    });
  },

  throughput(size, opts) {
    return withSocket('sink', async (socket, peer) => {
      const frame = encodeFrame(makePayload(size));
      const send = (): true | Promise<unknown> => socket.write(frame) || once(socket, 'drain');
      const sent = await streamMeasured(opts, peer.signal, send, () => socket.write(END_MARKER));
      return checkSink(await peer.result(), sent, size);
    });
  },
};
