/**
 * Baseline: raw UDP on 127.0.0.1 with `node:dgram`, both sockets connected,
 * 4 MiB socket buffers asked for (see `dgram-framing.ts` for the datagram
 * header). UDP neither retransmits nor pushes back, so this transport adds
 * the least an application needs to measure it, and counts what it loses:
 *
 * - RTT: ping-pong with an echo peer. A reply that has not come back after
 *   RETRY_MS..2*RETRY_MS is counted as lost and the datagram resent (late
 *   replies are recognised by their number and skipped); the resend delay
 *   stays inside that sample. Only messages that fit one datagram.
 * - Throughput: the sender keeps at most `window` messages (about ¾ of the
 *   receive buffer, see `windowFor`) not yet accounted for by the receiver, which acks over the IPC channel every `window / 4`
 *   messages; if no credit comes within CREDIT_WAIT_MS the sender presumes
 *   the window lost and goes on. The row is the receiver's count of complete
 *   messages over its own time span, as for every transport; `lost` = sent
 *   minus received. Messages larger than one datagram (1 MiB) are sent as
 *   ceil(size / 65507) numbered datagrams (17 for 1 MiB) and counted only when
 *   all arrived; nothing is retransmitted, so it is the ceiling of what an
 *   application gets from raw UDP for large messages, without the
 *   reliability the dvs rows provide.
 */
import type { ChildProcess } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { once } from 'node:events';
import { AckCounter } from '../acks.js';
import { chunkCount, chunkViews, endMarker, HEADER_BYTES, isMarkerAck, MAX_DATAGRAM, SOCKET_BUFFER_BYTES, writeHeader } from '../dgram-framing.js';
import { Mailbox } from '../mailbox.js';
import { withProcessPeer, type Peer } from '../peer.js';
import { isPeerReport, makePayload, type SinkResult } from '../protocol.js';
import { timeRoundTrips } from '../rtt.js';
import { streamMeasured } from '../stream.js';
import type { ThroughputResult, Transport } from '../transport.js';

/** Ping-pong: a reply missing for one to two of these periods is presumed lost and the datagram resent. */
const RETRY_MS = 25;
/** Throughput: how long the sender waits for credit before it presumes the window lost. */
const CREDIT_WAIT_MS = 50;
/** End markers are resent this often until the receiver acks them, at most MARKER_TRIES times. */
const MARKER_RESEND_MS = 20;
const MARKER_TRIES = 100;

/** Assumed kernel overhead per queued datagram (sk_buff and its rounding), for sizing the window. */
const DATAGRAM_OVERHEAD = 1024;

/**
 * Messages in flight (2..1000): what fills three quarters of the receive buffer, counting
 * the kernel's overhead per datagram. `recvBuffer` is the harness socket's,
 * which asked for the same size as the peer's under the same kernel caps.
 */
function windowFor(size: number, recvBuffer: number): number {
  const perMessage = size + chunkCount(size) * DATAGRAM_OVERHEAD;
  return Math.min(1000, Math.max(2, Math.floor((recvBuffer * 0.75) / perMessage)));
}

/** A socket bound to an ephemeral loopback port, closed when `fn` settles. */
async function withSocket<T>(fn: (socket: Socket) => Promise<T>): Promise<T> {
  const socket = createSocket({ type: 'udp4', recvBufferSize: SOCKET_BUFFER_BYTES, sendBufferSize: SOCKET_BUFFER_BYTES });
  try {
    const broken = new Promise<never>((_, reject) => socket.on('error', reject));
    await Promise.race([new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve)), broken]);
    return await Promise.race([fn(socket), broken]);
  } finally {
    socket.close();
  }
}

async function connectTo(socket: Socket, peer: Peer<ChildProcess>): Promise<void> {
  const port = Number(peer.address);
  if (!(port > 0)) throw new Error(`dgram peer reported no port (${String(peer.address)})`);
  socket.connect(port, '127.0.0.1');
  await once(socket, 'connect');
}

function rtt(size: number, iters: number): Promise<{ samples: number[]; lost: number }> {
  if (size < HEADER_BYTES || size > MAX_DATAGRAM) {
    return Promise.reject(new Error(`n/a: ping-pong needs one datagram of ${HEADER_BYTES}..${MAX_DATAGRAM} B`));
  }
  return withSocket((socket) =>
    withProcessPeer('dgram', ['echo', String(socket.address().port)], 'json', async (peer) => {
      await connectTo(socket, peer);
      const replies = new Mailbox<Buffer>(peer.signal);
      socket.on('message', (msg) => replies.deliver(msg));
      const payload = makePayload(size);
      let seq = 0;
      let pending = false;
      let completed = 0;
      let seenAtLastTick = -1;
      let lost = 0;
      // A watchdog rather than a timer per round trip, to keep the timed path lean.
      const watchdog = setInterval(() => {
        if (pending && completed === seenAtLastTick) {
          lost++;
          socket.send(payload);
        }
        seenAtLastTick = completed;
      }, RETRY_MS);
      try {
        const samples = await timeRoundTrips(iters, async () => {
          payload.writeUInt32LE(++seq >>> 0, 0);
          pending = true;
          socket.send(payload);
          for (;;) {
            const reply = await replies.next();
            if (reply.length === size && reply.readUInt32LE(0) === seq >>> 0) break;
          }
          pending = false;
          completed++;
        });
        return { samples, lost };
      } finally {
        clearInterval(watchdog);
      }
    }),
  );
}

function throughput(size: number, opts: { warmupSeconds: number; seconds: number }): Promise<ThroughputResult> {
  return withSocket((socket) => {
    const window = windowFor(size, socket.getRecvBufferSize());
    const ackEvery = Math.max(1, Math.floor(window / 4));
    // One buffer per message that can be in flight, so a queued send never sees its header rewritten.
    const ring = Array.from({ length: window + 1 }, () => chunkViews(makePayload(size)));
    return withProcessPeer('dgram', ['sink', String(ackEvery)], 'json', async (peer) => {
      await connectTo(socket, peer);
      const credit = new AckCounter(peer.signal);
      const markers = new Mailbox<number>(peer.signal);
      peer.handle.on('message', (msg: unknown) => {
        if (isMarkerAck(msg)) markers.deliver(msg.phase);
        else if (isPeerReport(msg) && msg.kind === 'ack') credit.ack(msg.msgs);
      });
      let seq = 0;
      const send = (): true | Promise<unknown> => {
        const chunks = ring[seq % ring.length];
        for (let i = 0; i < chunks.length; i++) {
          writeHeader(chunks[i], seq, i, chunks.length);
          socket.send(chunks[i]);
        }
        seq++;
        const ready = credit.until(seq - window + 1);
        return ready === true ? true : orAfter(ready, CREDIT_WAIT_MS);
      };
      let phase = 0;
      const sendEndMarker = async (): Promise<void> => {
        const marker = endMarker(++phase);
        const acked = nextMarkerAck(markers, phase);
        for (let tries = 0; tries < MARKER_TRIES; tries++) {
          socket.send(marker);
          if (await orAfter(acked, MARKER_RESEND_MS)) return;
        }
        throw new Error(`end marker ${phase} not acknowledged after ${MARKER_TRIES} tries`);
      };
      const sent = await streamMeasured(opts, peer.signal, send, sendEndMarker);
      return checkLossySink(await peer.result(), sent, size);
    });
  });
}

/** Resolves true when the marker ack for `phase` arrives (older, duplicate acks are skipped). */
async function nextMarkerAck(markers: Mailbox<number>, phase: number): Promise<true> {
  while ((await markers.next()) < phase);
  return true;
}

/** `promise`'s value, or `false` once `ms` have passed (the promise is left to settle unobserved). */
async function orAfter<T>(promise: Promise<T>, ms: number): Promise<T | false> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Like `checkSink`, but a shortfall is loss rather than an error; every counted message must be whole. */
function checkLossySink(result: SinkResult, sent: number, size: number): ThroughputResult {
  if (result.msgs > sent || result.bytes !== result.msgs * size) {
    throw new Error(`sink got ${result.msgs} msgs / ${result.bytes} B, sender sent ${sent} msgs of ${size} B`);
  }
  return { msgs: result.msgs, seconds: result.seconds, lost: sent - result.msgs };
}

export const nodeDgram: Transport = {
  name: 'node-dgram',
  notes: [
    `node-dgram: raw UDP, connected sockets. RTT: a reply missing after ${RETRY_MS}-${2 * RETRY_MS} ms counts as lost and is resent.`,
    `  Throughput: the sender is paced by credit (receiver acks over IPC; window: ¾ of the receive buffer, ≤ 1000 msgs); the row counts complete`,
    `  messages at the receiver. 1 MiB = 17 datagrams of ≤ ${MAX_DATAGRAM} B, reassembled, never retransmitted (a ceiling, not reliable).`,
    `  lost = RTT resends + throughput messages sent but never received complete.`,
  ],
  rtt,
  throughput,
};
