// membership-backends.test.ts — the same membership and directory suite
// (membership-suite.ts) against both registry backends: embedded (agents
// join from one seed) and etcd (a real etcd started for the test; skipped
// with the reason when the etcd binary is not installed).
import t from 'tap';
import { etcdMissing, startEtcd } from './etcd-helpers.js';
import { membershipSuite } from './membership-suite.js';

t.test('embedded backend', (tt) =>
  membershipSuite(tt, {
    name: 'embedded',
    agentArgs: (_node, seedPort) => ['--seeds', `1=127.0.0.1:${seedPort}`],
    detectMs: 1500,
    detectBoundMs: 4000,
    partitionChangesView: true,
  }),
);

t.test('etcd backend', { skip: etcdMissing() }, async (tt) => {
  const etcd = await startEtcd(tt);
  await membershipSuite(tt, {
    name: 'etcd',
    agentArgs: () => ['--registry', etcd.url],
    detectMs: 2000,
    detectBoundMs: 6000,
    partitionChangesView: false,
  });
});
