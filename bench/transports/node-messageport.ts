/**
 * Baseline: main thread <-> worker_threads worker over the worker's built-in
 * MessagePort (worker.postMessage / parentPort). Uint8Arrays are COPIED by
 * structured clone, not transferred: a transfer would detach the sender's
 * buffer and force a fresh allocation per message.
 *
 * MessagePort has no back-pressure, so throughput uses credit-based flow
 * control: the sink acks every `ackEvery` data messages and the sender keeps at
 * most `inFlightLimit(size)` messages unacknowledged.
 */
import { AckCounter } from '../acks.js';
import { Mailbox } from '../mailbox.js';
import { withWorkerPeer } from '../peer.js';
import { checkReply, checkSink, inFlightLimit, isPeerReport } from '../protocol.js';
import { timeRoundTrips } from '../rtt.js';
import { streamMeasured } from '../stream.js';
import type { Transport } from '../transport.js';

/** `workerData` of the messageport peer; a sink acks every `ackEvery` messages. */
export type MessagePortPeerData = { readonly role: 'echo' } | { readonly role: 'sink'; readonly ackEvery: number };

function payload(size: number): Uint8Array {
  // A dedicated ArrayBuffer of exactly `size` bytes: structured clone copies the whole backing buffer.
  return new Uint8Array(size).fill(0xa5);
}

export const nodeMessagePort: Transport = {
  name: 'node-messageport',

  rtt(size, iters) {
    const data: MessagePortPeerData = { role: 'echo' };
    return withWorkerPeer('messageport', data, ({ handle: worker, signal }) => {
      const replies = new Mailbox<Uint8Array>(signal);
      worker.on('message', (msg: unknown) => {
        if (msg instanceof Uint8Array) replies.deliver(msg);
      });
      const msg = payload(size);
      return timeRoundTrips(iters, async () => {
        worker.postMessage(msg);
        checkReply(await replies.next(), size);
      });
    });
  },

  throughput(size, opts) {
    const window = inFlightLimit(size);
    const data: MessagePortPeerData = { role: 'sink', ackEvery: Math.max(1, Math.floor(window / 4)) };
    return withWorkerPeer('messageport', data, async ({ handle: worker, signal, result }) => {
      const acks = new AckCounter(signal);
      worker.on('message', (msg: unknown) => {
        if (isPeerReport(msg) && msg.kind === 'ack') acks.ack(msg.msgs);
      });
      const msg = payload(size);
      let posted = 0;
      const send = (): true | Promise<void> => {
        worker.postMessage(msg);
        posted++;
        return acks.until(posted - window + 1);
      };
      const sent = await streamMeasured(opts, signal, send, () => worker.postMessage(new Uint8Array(0)));
      return checkSink(await result(), sent, size);
    });
  },
};
