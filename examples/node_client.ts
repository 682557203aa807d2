// node_client.ts — a Node.js client of the C service in examples/c_server.c.
//
//   make -C native && npm run build:ts
//   build-c/c_server 0 1 10 &          # node 0, DC 1, endpoint 10
//   node dist/examples/node_client.js   # calls it from endpoint 11
//
// The two programs share nothing but the node's arena in /dev/shm: the request
// is written once into shared memory by Node and read in place by C, and the
// reply travels back the same way.
import { attach } from '../lib/index.js';

const node = attach({ node: Number(process.env.DVS_NODE ?? 0) });
const ep = node.bind(1, 11);
try {
  for (const req of ['upper:hello from node', 'count', 'quit']) {
    const reply = await ep.call(10, req, { timeoutMs: 2000 });
    console.log(`${req} -> ${reply.text()}`);
    reply.release();
  }
} finally {
  node.detach();
}
