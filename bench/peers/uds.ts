/** node-uds peer: listens on the Unix socket path in argv[3], role in argv[2]. */
import { createServer } from 'node:net';
import { FrameDecoder, writeFrame } from '../framing.js';
import { exitWithParent, report } from '../peer-runtime.js';
import { parseRole } from '../protocol.js';
import { Sink } from '../sink.js';

const role = parseRole(process.argv[2]);
const path = process.argv[3];
if (path === undefined) throw new Error('usage: uds.js <role> <socket-path>');
exitWithParent();

const server = createServer((socket) => {
  const sink = new Sink();
  const decoder = new FrameDecoder((payload) => {
    if (role === 'echo') writeFrame(socket, payload);
    else {
      const result = sink.receive(payload.length);
      if (result !== undefined) report(result);
    }
  });
  socket.on('data', (chunk: Buffer) => decoder.push(chunk));
  socket.on('error', () => socket.destroy());
});
server.listen(path, () => report({ kind: 'ready' }));
