/**
 * node-dgram peer: a UDP socket on 127.0.0.1 (port picked by the kernel,
 * reported in `ready`). argv: `echo <harness-port>` (echoes every datagram
 * back over a connected socket) or `sink <ack-every>` (reassembles messages
 * from numbered datagrams, counts them with `Sink`, and acks over IPC; see
 * `transports/node-dgram.ts`).
 */
import { createSocket } from 'node:dgram';
import { HEADER_BYTES, MARKER_SEQ, readHeader, SOCKET_BUFFER_BYTES, type MarkerAck } from '../dgram-framing.js';
import { exitWithParent, report } from '../peer-runtime.js';
import { parseRole } from '../protocol.js';
import { Sink } from '../sink.js';

const role = parseRole(process.argv[2]);
const arg = Number(process.argv[3]);
if (!(arg > 0)) throw new Error('usage: dgram.js echo <harness-port> | sink <ack-every>');
exitWithParent();

const socket = createSocket({ type: 'udp4', recvBufferSize: SOCKET_BUFFER_BYTES, sendBufferSize: SOCKET_BUFFER_BYTES });
socket.on('error', (err) => {
  throw err;
});
const ready = (): void => report({ kind: 'ready', address: String(socket.address().port) });

if (role === 'echo') {
  socket.on('message', (msg) => socket.send(msg));
  socket.bind(0, '127.0.0.1', () => socket.connect(arg, '127.0.0.1', ready));
} else {
  const ackEvery = arg;
  const sink = new Sink();
  let current = 0; // number of the message being reassembled; all below it are done (complete or lost)
  let chunksGot = 0;
  let bytesGot = 0;
  let acked = 0;
  let markersSeen = 0;
  const ack = (msg: MarkerAck | { kind: 'ack'; msgs: number }): void => {
    if (process.send === undefined) throw new Error('dgram peer needs an IPC channel');
    process.send(msg);
  };
  socket.on('message', (datagram) => {
    if (datagram.length < HEADER_BYTES) return;
    const { seq, chunk, chunks } = readHeader(datagram);
    if (seq === MARKER_SEQ) {
      // Markers are resent until acked: act on each phase once, ack every copy.
      if (chunk === markersSeen + 1) {
        markersSeen = chunk;
        const result = sink.receive(0);
        if (result !== undefined) report(result);
      }
      ack({ kind: 'marker', phase: chunk });
      return;
    }
    if (seq < current) return; // a late duplicate
    if (seq > current) {
      // Loopback does not reorder: a later message means `current` (and any
      // in between) lost a datagram. They are done, as lost.
      current = seq;
      chunksGot = 0;
      bytesGot = 0;
    }
    chunksGot++;
    bytesGot += datagram.length;
    if (chunksGot === chunks) {
      sink.receive(bytesGot);
      current++;
      chunksGot = 0;
      bytesGot = 0;
    }
    if (current - acked >= ackEvery) {
      acked = current;
      ack({ kind: 'ack', msgs: current });
    }
  });
  socket.bind(0, '127.0.0.1', ready);
}
