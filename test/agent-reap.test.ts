// agent-reap.test.ts — the agent reclaims the endpoints of a process that
// died without it noticing: a C program (the C API does not connect to the
// agent's control socket, like a Node process SIGKILLed before its first
// control message arrives) binds an endpoint and is killed with SIGKILL; no
// other process of the node waits or binds (nothing else would reap it), yet
// the endpoint leaves the node's table and the directory within a few
// seconds (the agent's periodic sweep), and the number can be bound again.
import { join } from 'node:path';
import t from 'tap';
import { attach, startAgent } from '../lib/index.js';
import { silentLogger } from '../lib/agent/log.js';
import { buildC, missingCTools, shmFiles, sleep, spawnExe, uniqueNs, within } from './helpers.js';

const DC = 3;

t.test('a SIGKILLed process the agent never heard of is reaped', { skip: missingCTools.length ? `${missingCTools.join(', ')} not installed` : false }, async (tt) => {
  const built = buildC();
  if (!built.dir) {
    tt.fail(built.error!);
    return;
  }
  const ns = uniqueNs('reap');
  const agent = await startAgent({ node: 1, listen: { host: '127.0.0.1', port: 0 }, peers: [], namespace: ns }, silentLogger);
  tt.teardown(() => agent.stop());
  const srv = spawnExe(tt, join(built.dir, 'c_server'), [1, DC, 10, '--ns', ns]);
  tt.equal(await within(srv.line(), 30000, 'c_server ready'), 'ready');
  tt.ok(agent.ps().some((e) => e.dc === DC && e.ep === 10 && e.pid === srv.pid), 'the agent lists the C process endpoint');
  srv.kill('SIGKILL');
  await srv.exit(10000);
  const t0 = Date.now();
  while (agent.ps().some((e) => e.dc === DC && e.ep === 10) && Date.now() - t0 < 10000) await sleep(50);
  const ms = Date.now() - t0;
  tt.notOk(agent.ps().some((e) => e.dc === DC && e.ep === 10), `the endpoint left the table ${ms} ms after the kill (sweep every 1 s)`);
  const n = attach({ node: 1, namespace: ns });
  const again = n.bind(DC, 10);
  tt.pass('the endpoint number can be bound again');
  again.close();
  n.detach();
  await agent.stop();
  await sleep(50);
  tt.same(shmFiles(ns), [], 'no segment left');
});
