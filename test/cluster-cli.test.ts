// cluster-cli.test.ts — `dvs agent` as a program: bad flags are refused with a
// clear message and a non-zero exit, a second agent for the same node and
// namespace is refused (and does not disturb the first), SIGTERM stops an
// agent with exit 0 leaving nothing behind (segment, control socket, UDP
// port); the embedded mode (startAgent: two agents in this process); and the
// query commands (dc, lookup, ps, nodes, agent status): bad input gives
// "dvs: CODE: message" and exit 1, --json works on each.
import { createSocket } from 'node:dgram';
import t from 'tap';
import { attach, startAgent, type Agent } from '../lib/index.js';
import { silentLogger } from '../lib/agent/log.js';
import { controlRequest } from '../lib/agent/control.js';
import { shmFiles, sleep, spawnFixture, uniqueNs, within } from './helpers.js';
import { freeUdpPorts, retryWhile, runCli, startCluster, waitRemote } from './cluster-helpers.js';

const DC = 1;
const used: string[] = [];

async function udpPortFree(port: number): Promise<boolean> {
  const s = createSocket('udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(port, '127.0.0.1', () => resolve());
    });
    return true;
  } catch {
    return false;
  } finally {
    try {
      s.close();
    } catch {
      /* never bound */
    }
  }
}

t.test('bad flags: non-zero exit and a clear message', async (tt) => {
  const ns = uniqueNs('cl-flags');
  used.push(ns);
  const [p1, p2, p3] = await freeUdpPorts(3);
  const base = ['agent', '--namespace', ns, '--log-level', 'warn'];
  const cases: [string, string[], RegExp][] = [
    ['--listen without a port', ['--node', '1', '--listen', '127.0.0.1'], /--listen must be <ipv4>:<port>/],
    ['--listen with a bad address', ['--node', '1', '--listen', '300.1.2.3:' + p1], /--listen must be <ipv4>:<port>/],
    ['--listen with a port out of range', ['--node', '1', '--listen', '127.0.0.1:70000'], /--listen must be <ipv4>:<port>/],
    ['no --listen', ['--node', '1'], /needs --listen/],
    ['no --node', ['--listen', `127.0.0.1:${p1}`], /needs --node/],
    ['a node out of range', ['--node', '5000', '--listen', `127.0.0.1:${p1}`], /--node must be an integer in \[0, 1023\]/],
    ['a duplicate peer', ['--node', '1', '--listen', `127.0.0.1:${p1}`, '--peers', `2=127.0.0.1:${p2},2=127.0.0.1:${p3}`], /node 2 appears twice/],
    ['itself as a peer', ['--node', '1', '--listen', `127.0.0.1:${p1}`, '--peers', `1=127.0.0.1:${p2}`], /node 1 appears twice \(or is this node\)/],
    ['a malformed peer', ['--node', '1', '--listen', `127.0.0.1:${p1}`, '--peers', `2:127.0.0.1:${p2}`], /--peers entries are <node>=<ipv4>:<port>/],
    ['a fault probability above 1', ['--node', '1', '--listen', `127.0.0.1:${p1}`, '--fault', 'loss=2'], /loss is a probability in \[0, 1\]/],
    ['an unknown fault', ['--node', '1', '--listen', `127.0.0.1:${p1}`, '--fault', 'explode=0.5'], /fault spec entries are loss\|dup\|reorder/],
    ['a non-numeric fault', ['--node', '1', '--listen', `127.0.0.1:${p1}`, '--fault', 'loss=lots'], /fault spec entries are/],
    ['a bad --dead-after-ms', ['--node', '1', '--listen', `127.0.0.1:${p1}`, '--dead-after-ms', '-5'], /--dead-after-ms must be an integer/],
  ];
  await Promise.all(
    cases.map(async ([what, args, msg]) => {
      const r = await runCli(tt, [...base, ...args]);
      tt.equal(r.code, 1, `${what}: exit status 1`);
      tt.match(r.stderr, msg, `${what}: says why (${r.stderr.trim().split('\n')[0]})`);
      tt.match(r.stderr, /^dvs: /m, `${what}: an error line, not a stack trace`);
    }),
  );
  tt.same(shmFiles(ns), [], 'no segment was created');
  await tt.rejects(controlRequest(ns, 1, 'status', {}, 2000), { code: 'EDVSNOTCONN' }, 'no agent is listening');
});

t.test('a second agent for the same node and namespace is refused', async (tt) => {
  const ns = uniqueNs('cl-busy');
  used.push(ns);
  const [a1] = await startCluster(tt, ns, [1]);
  const [other] = await freeUdpPorts(1);
  const r = await runCli(tt, ['agent', '--node', '1', '--listen', `127.0.0.1:${other}`, '--namespace', ns, '--log-level', 'warn']);
  tt.equal(r.code, 1, 'the second agent exits with status 1');
  tt.match(r.stderr, /another agent/, `it says why: ${r.stderr.trim()}`);
  const st = await a1.status();
  tt.equal(st.pid, a1.pid, 'the first agent still answers its control socket');
  tt.ok(await udpPortFree(other), 'the refused agent released its UDP port');
  // The first agent still serves its node: a process attaches and talks through it.
  const srv = spawnFixture(tt, 'server', [ns, 1, DC, 5, 'echo']);
  tt.equal(await within(srv.line(), 30000, 'server ready'), 'ready');
  const n = attach({ node: 1, namespace: ns });
  tt.teardown(() => n.detach());
  const r1 = await n.bind(DC, 6).call(5, Uint8Array.from([7]), { timeoutMs: 10000 });
  tt.same([...r1.payload], [8], 'local calls still work');
  r1.release();
  tt.equal((await a1.request<{ endpoints: { ep: number }[] }>('ps')).endpoints.filter((e) => e.ep === 5 || e.ep === 6).length, 2, 'and the first agent sees the endpoints');
  n.detach();
  srv.kill('SIGKILL');
  await srv.exit();
  tt.same(await a1.stop(), { code: 0, signal: null });
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('SIGTERM: exit 0, nothing left behind', async (tt) => {
  const ns = uniqueNs('cl-term');
  used.push(ns);
  const [a1, a2] = await startCluster(tt, ns, [1, 2]);
  // Some traffic first, so that there is something to tear down.
  const srv = spawnFixture(tt, 'server', [ns, 2, DC, 7, 'echo']);
  tt.equal(await within(srv.line(), 30000, 'server ready'), 'ready');
  await waitRemote(a1, DC, 7);
  const n1 = attach({ node: 1, namespace: ns });
  tt.teardown(() => n1.detach());
  const r = await n1.bind(DC, 8).call(7, Uint8Array.from([1]), { timeoutMs: 10000 });
  tt.same([...r.payload], [2], 'a remote call works');
  r.release();
  n1.detach();
  (await within(
    (async () => {
      const n2 = attach({ node: 2, namespace: ns });
      try {
        return await n2.bind(DC, 9).call(7, 'quit', { timeoutMs: 10000 });
      } finally {
        n2.detach();
      }
    })(),
    15000,
    'quit',
  )).release();
  tt.same(await srv.exit(), { code: 0, signal: null });

  for (const a of [a1, a2]) {
    const port = a.opts.port;
    const e = await a.stop();
    tt.same(e, { code: 0, signal: null }, `agent ${a.node}: SIGTERM -> exit status 0`);
    tt.notMatch(a.child.stderr, /"level":"error"/, `agent ${a.node}: no error logged`);
    tt.same(shmFiles(ns).filter((f) => f === `dvs.${ns}.${a.node}`), [], `agent ${a.node}: its segment is gone`);
    await tt.rejects(controlRequest(ns, a.node, 'status', {}, 2000), { code: 'EDVSNOTCONN' }, `agent ${a.node}: its control socket is gone`);
    tt.ok(await udpPortFree(port), `agent ${a.node}: its UDP port is free again`);
  }
  tt.same(shmFiles(ns), [], 'no segment left');
});

t.test('embedded mode: two agents in this process', async (tt) => {
  const ns = uniqueNs('cl-embed');
  used.push(ns);
  const [p1, p2] = await freeUdpPorts(2);
  const agents: Agent[] = [];
  tt.teardown(async () => {
    for (const a of agents) await a.stop();
  });
  const a1 = await startAgent({ node: 1, listen: { host: '127.0.0.1', port: p1 }, peers: [{ node: 2, host: '127.0.0.1', port: p2 }], namespace: ns, deadAfterMs: 1000 }, silentLogger);
  agents.push(a1);
  const a2 = await startAgent({ node: 2, listen: { host: '127.0.0.1', port: p2 }, peers: [{ node: 1, host: '127.0.0.1', port: p1 }], namespace: ns, deadAfterMs: 1000 }, silentLogger);
  agents.push(a2);
  tt.equal(a1.port, p1, 'agent 1 listens on its port');
  await a1.waitForPeers(undefined, 10000);
  await a2.waitForPeers(undefined, 10000);
  tt.same(a1.status().peers.map((p) => [p.node, p.up]), [[2, true]], 'agent 1 sees node 2 up');
  tt.same(a2.status().peers.map((p) => [p.node, p.up]), [[1, true]], 'agent 2 sees node 1 up');

  const n1 = attach({ node: 1, namespace: ns });
  tt.teardown(() => n1.detach());
  const n2 = attach({ node: 2, namespace: ns });
  tt.teardown(() => n2.detach());
  const server = n2.bind(DC, 50);
  const serving = (async () => {
    for (;;) {
      let m;
      try {
        m = await server.receive();
      } catch {
        return;  // closed
      }
      if (m.kind === 'call') m.reply(Uint8Array.from(m.payload, (b) => (b + 1) & 0xff));
      m.release();
    }
  })();
  const client = n1.bind(DC, 51);
  const first = await retryWhile(() => client.call(50, Uint8Array.from([41]), { timeoutMs: 5000 }), ['EDVSNOTBIND'], 10000, 'first call');
  tt.same([...first.payload], [42], 'a call from node 1 to node 2 through the embedded agents');
  first.release();
  const replies = await within(
    Promise.all(Array.from({ length: 500 }, (_, i) => client.call(50, Uint8Array.from([i & 0xff, 9]), { timeoutMs: 10000 }).then((r) => {
      const v = [...r.payload];
      r.release();
      return v.join();
    }))),
    20000,
    '500 concurrent calls',
  );
  tt.same(replies, Array.from({ length: 500 }, (_, i) => [(i + 1) & 0xff, 10].join()), '500 concurrent calls, each answered correctly');
  const row = a1.ps().find((e) => e.ep === 50);
  tt.same(row && [row.where, row.node, row.pid], ['remote', 2, process.pid], 'agent 1 lists the remote endpoint with its node and pid');
  // The engine refreshes its stats every 50 ms.
  const sent = (): number => (a1.stats() as { peers: { node: number; msgsSent: number }[] }).peers.find((p) => p.node === 2)?.msgsSent ?? 0;
  for (let i = 0; i < 40 && sent() < 501; i++) await sleep(50);
  tt.ok(sent() >= 501, `agent 1 counted the messages it sent to node 2 (${sent()})`);

  server.close();
  await serving;
  n1.detach();
  n2.detach();
  await a1.stop();
  await a2.stop();
  agents.length = 0;
  await sleep(50);
  tt.same(shmFiles(ns), [], 'no segment left after both agents stopped');
  await tt.rejects(controlRequest(ns, 1, 'status', {}, 2000), { code: 'EDVSNOTCONN' }, 'the control socket is closed');
  tt.ok(await udpPortFree(p1), 'UDP port of agent 1 free again');
});

t.test('dvs dc, lookup, ps, nodes, agent status: bad input → "dvs: CODE: message", exit 1; --json everywhere', async (tt) => {
  const ns = uniqueNs('cl-input');
  used.push(ns);
  const [a1] = await startCluster(tt, ns, [1]);
  const at = ['--node', '1', '--namespace', ns];
  const cases: [string, string[], RegExp][] = [
    ['dc without a subcommand', ['dc', ...at], /EDVSINVAL: dc needs a subcommand/],
    ['an unknown dc subcommand', ['dc', 'frob', ...at], /EDVSINVAL: unknown dc subcommand 'frob'/],
    ['dc create without --nodes', ['dc', 'create', '5', ...at], /EDVSINVAL: dc create needs --nodes/],
    ['dc create with --nodes but no value', ['dc', 'create', '5', '--nodes', ...at], /EDVSINVAL: --nodes needs a value/],
    ['dc create with a non-numeric DC', ['dc', 'create', 'five', '--nodes', '1', ...at], /EDVSINVAL: DC must be a non-negative integer, got 'five'/],
    ['dc create with DC 4096', ['dc', 'create', '4096', '--nodes', '1', ...at], /EDVSBADDCID: dc must be in \[0, 4095\]/],
    ['dc create with a bad node list', ['dc', 'create', '5', '--nodes', '1,x', ...at], /EDVSINVAL: NODE must be a non-negative integer, got 'x'/],
    ['dc create with node 1024', ['dc', 'create', '5', '--nodes', '1024', ...at], /EDVSBADNODEID: node must be in \[0, 1023\]/],
    ['dc create with two DCs', ['dc', 'create', '5', '6', '--nodes', '1', ...at], /EDVSINVAL: unexpected arguments \(usage: dvs dc create DC --nodes/],
    ['dc add-node with one argument', ['dc', 'add-node', '5', ...at], /EDVSINVAL: missing arguments \(usage: dvs dc add-node DC NODE/],
    ['dc add-node to an unknown DC', ['dc', 'add-node', '5', '1', ...at], /EDVSBADDCID: DC 5 does not exist/],
    ['dc remove-node with three arguments', ['dc', 'remove-node', '5', '1', '2', ...at], /EDVSINVAL: unexpected arguments/],
    ['dc list with an unknown flag', ['dc', 'list', '--verbose', ...at], /EDVSINVAL: unknown flag --verbose/],
    ['lookup without a name', ['lookup', '1', ...at], /EDVSINVAL: missing arguments \(usage: dvs lookup DC NAME/],
    ['lookup with a 32-byte name', ['lookup', '1', 'x'.repeat(32), ...at], /EDVSINVAL: name must be 1-31 bytes/],
    ['lookup with a negative DC', ['lookup', '-1', 'a', ...at], /EDVSINVAL: DC must be a non-negative integer, got '-1'/],
    ['lookup with --json=yes', ['lookup', '1', 'a', '--json=yes', ...at], /EDVSINVAL: --json takes no value/],
    ['lookup of an unbound name', ['lookup', '1', 'nobody', ...at], /EDVSNOTBIND: no endpoint named "nobody" in DC 1/],
    ['ps with an extra argument', ['ps', 'everything', ...at], /EDVSINVAL: unexpected arguments/],
    ['nodes with a bad --node', ['nodes', '--node', 'x', '--namespace', ns], /EDVSINVAL: --node must be an integer in \[0, 1023\]/],
    ['agent status with an unknown flag', ['agent', 'status', '--bogus', ...at], /EDVSINVAL: unknown flag --bogus/],
    ['dc list on a node without an agent', ['dc', 'list', '--node', '9', '--namespace', ns], /EDVSNOTCONN: no agent for node 9/],
    ['lookup on a node without an agent', ['lookup', '1', 'a', '--node', '9', '--namespace', ns], /EDVSNOTCONN: no agent for node 9/],
    ['agent status on a node without an agent', ['agent', 'status', '--node', '9', '--namespace', ns, '--json'], /EDVSNOTCONN: no agent for node 9/],
  ];
  await Promise.all(
    cases.map(async ([what, args, msg]) => {
      const r = await runCli(tt, args);
      tt.equal(r.code, 1, `${what}: exit status 1`);
      tt.match(r.stderr, /^dvs: EDVS[A-Z0-9]+: \S/, `${what}: "dvs: CODE: message" (${r.stderr.trim().split('\n')[0]})`);
      tt.match(r.stderr, msg, `${what}: says why`);
      tt.notMatch(r.stderr, /^\s+at /m, `${what}: no stack trace`);
      tt.equal(r.stdout, '', `${what}: nothing on stdout`);
    }),
  );
  tt.same((await a1.request<{ dcs: unknown[] }>('dcs')).dcs, [], 'no bad command changed the DC table');

  // --json on every command, against a running agent
  const n = attach({ node: 1, namespace: ns });
  tt.teardown(() => n.detach());
  n.bind(1, 9, { name: 'json-test' });
  const json = async (args: string[]): Promise<Record<string, unknown>> => {
    const r = await runCli(tt, [...args, ...at, '--json']);
    tt.equal(r.code, 0, `dvs ${args.join(' ')} --json: exit 0 ${r.stderr}`);
    try {
      return JSON.parse(r.stdout) as Record<string, unknown>;
    } catch {
      tt.fail(`dvs ${args.join(' ')} --json printed no JSON: ${r.stdout}`);
      return {};
    }
  };
  tt.equal((await json(['nodes'])).mode, 'static', 'nodes --json');
  tt.same(((await json(['ps'])).endpoints as { ep: number; name: string }[]).map((e) => [e.ep, e.name]), [[9, 'json-test']], 'ps --json');
  tt.equal((await json(['ps', '--local'])).scope, 'local', 'ps --local --json');
  tt.same(await json(['dc', 'create', '12', '--nodes', '1']), { dc: 12, nodes: [1], version: 1 }, 'dc create --json');
  tt.same((await json(['dc', 'add-node', '12', '2'])).nodes, [1, 2], 'dc add-node --json');
  tt.same((await json(['dc', 'remove-node', '12', '2'])).nodes, [1], 'dc remove-node --json');
  tt.same((await json(['dc', 'list'])).dcs, [{ dc: 12, nodes: [1], version: 3 }], 'dc list --json');
  tt.same(await json(['lookup', '1', 'json-test']), { dc: 1, ep: 9, node: 1, gen: (await json(['lookup', '1', 'json-test'])).gen, pid: process.pid, name: 'json-test' }, 'lookup --json');
  const st = await json(['agent', 'status']);
  tt.same([st.node, st.pid, st.registry], [1, a1.pid, 'static'], 'agent status --json');
  const text = await runCli(tt, ['agent', 'status', ...at]);
  tt.match(text.stdout, /^agent of node 1, namespace .*: pid \d+, listening on 127\.0\.0\.1:\d+, static registry$/m, 'agent status in text');
  tt.match(text.stdout, /^DC 12: nodes 1 \(version 3\)$/m, 'with the DC table');
  n.detach();

  const help = await runCli(tt, ['--help']);
  tt.equal(help.code, 0, 'dvs --help exits 0');
  for (const c of ['dvs dc create DC --nodes', 'dvs dc add-node DC NODE', 'dvs dc remove-node DC NODE', 'dvs dc list', 'dvs lookup DC NAME', 'dvs agent status', 'dvs ps [--local]', 'dvs nodes'])
    tt.match(help.stdout, c, `dvs --help lists "${c}"`);
  tt.same(await a1.stop(), { code: 0, signal: null });
});

t.test('nothing left behind', async (tt) => {
  for (const ns of used) tt.same(shmFiles(ns), [], `no /dev/shm/dvs.${ns}.*`);
});
