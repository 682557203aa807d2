// demo.ts — `dvs demo`: two processes on one node play ping-pong through dvs
// and the parent prints the live round-trip latency, first with the async API
// (promises, event loop free between messages) and then with the synchronous
// spin API. (Later the cluster demo with live migration replaces it.)
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { attach } from '../node.js';
import { intFlag, type Flags } from './args.js';

const SERVER_EP = 1;
const CLIENT_EP = 2;

function pct(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))];
}

export async function demo(f: Flags): Promise<number> {
  const seconds = intFlag(f, 'seconds', 3, 1, 3600);
  const size = intFlag(f, 'size', 64, 0, 1 << 20);
  const namespace = `demo-${process.pid}`;
  const node = attach({ node: 0, namespace });
  const child = spawn(process.execPath, [fileURLToPath(new URL('./main.js', import.meta.url)), 'demo-peer', namespace], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const stop = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('SIGINT', stop);
  try {
    const [line] = (await Promise.race([once(child.stdout!, 'data'), once(child, 'exit')])) as [Buffer];
    if (!String(line).startsWith('ready')) throw new Error('demo peer did not start');
    const ep = node.bind(0, CLIENT_EP);
    const payload = new Uint8Array(size).fill(0x5a);
    process.stdout.write(`dvs demo: ping-pong of ${size}-byte calls between pid ${process.pid} and pid ${child.pid} (node 0, /dev/shm/dvs.${namespace}.0)\n`);
    let total = 0;
    for (const mode of ['async', 'spin'] as const) {
      if (mode === 'spin') (await ep.call(SERVER_EP, 'mode:spin')).release();
      for (let s = 1; s <= seconds; s++) {
        const samples: number[] = [];
        const end = process.hrtime.bigint() + 1_000_000_000n;
        for (let now = process.hrtime.bigint(); now < end; ) {
          const r = mode === 'async' ? await ep.call(SERVER_EP, payload) : ep.callSync(SERVER_EP, payload, { spinUs: Infinity });
          const t = process.hrtime.bigint();
          if (r.length !== size) throw new Error('reply of the wrong size');
          r.release();
          samples.push(Number(t - now) / 1000);
          now = t;
        }
        const sorted = Float64Array.from(samples).sort();
        total += samples.length;
        process.stdout.write(
          `  ${mode.padEnd(5)} t=${s}s  ${String(samples.length).padStart(7)} calls/s   rtt p50 ${pct(sorted, 0.5).toFixed(2).padStart(7)} µs   p99 ${pct(sorted, 0.99).toFixed(2).padStart(8)} µs\n`,
        );
      }
    }
    ep.sendSync(SERVER_EP, 'stop');
    await once(child, 'exit');
    process.stdout.write(`done: ${total} calls, 0 failed\n`);
    return 0;
  } finally {
    stop();
    node.detach();
  }
}

/** The demo's server: echoes calls; "mode:spin" switches to a busy-polling loop; "stop" ends. */
export async function demoPeer(f: Flags): Promise<number> {
  const node = attach({ node: 0, namespace: f.positional[0] });
  const ep = node.bind(0, SERVER_EP);
  process.stdout.write('ready\n');
  let spin = false;
  for await (const m of ep) {
    if (m.kind === 'call') m.reply(m.payload);
    if (m.length === 9 && m.text() === 'mode:spin') {
      spin = true;
      break;
    }
    if (m.kind === 'send') break;
  }
  while (spin) {
    const m = ep.receiveSync({ spinUs: Infinity });
    if (m.kind === 'call') m.reply(m.payload);
    else spin = false;
    m.release();
  }
  node.detach();
  return 0;
}
