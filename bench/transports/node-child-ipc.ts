/**
 * Baseline: the child_process.fork IPC channel with `serialization: 'advanced'`
 * (V8 serializer), so Buffers travel as binary rather than JSON.
 */
import { AckCounter } from '../acks.js';
import { Mailbox } from '../mailbox.js';
import { withProcessPeer } from '../peer.js';
import { checkReply, checkSink, makePayload } from '../protocol.js';
import { timeRoundTrips } from '../rtt.js';
import { streamMeasured } from '../stream.js';
import type { Transport } from '../transport.js';

export const nodeChildIpc: Transport = {
  name: 'node-child-ipc',

  rtt(size, iters) {
    return withProcessPeer('child-ipc', ['echo'], 'advanced', ({ handle: child, signal }) => {
      const replies = new Mailbox<Uint8Array>(signal);
      child.on('message', (msg: unknown) => {
        if (msg instanceof Uint8Array) replies.deliver(msg);
      });
      const payload = makePayload(size);
      return timeRoundTrips(iters, async () => {
        child.send(payload);
        checkReply(await replies.next(), size);
      });
    });
  },

  throughput(size, opts) {
    return withProcessPeer('child-ipc', ['sink'], 'advanced', async ({ handle: child, signal, result }) => {
      // send() returns false once its write backlog is too large; the callback
      // fires when a message has been written, so wait until all are written.
      const written = new AckCounter(signal);
      let writtenCount = 0;
      const onWritten = (err: Error | null): void => {
        if (err === null) written.ack(++writtenCount);
        else written.fail(err);
      };
      const payload = makePayload(size);
      let queued = 0;
      const send = (): true | Promise<void> => {
        queued++;
        return child.send(payload, onWritten) || written.until(queued);
      };
      const endMarker = Buffer.alloc(0);
      const sent = await streamMeasured(opts, signal, send, () => child.send(endMarker));
      return checkSink(await result(), sent, size);
    });
  },
};
