// lifecycle.test.ts — the shared-memory segment's life: created by the first
// attach, kept while any process is attached, removed by the last detach —
// including when a process ends without calling detach() itself.
import t from 'tap';
import { attach } from '../lib/index.js';
import { assertNoShm, shmFiles, spawnFixture, uniqueNs } from './helpers.js';

const base = uniqueNs('life');

t.test('the last detach removes the segment', async (tt) => {
  const ns = `${base}-a`;
  const n1 = attach({ node: 0, namespace: ns });
  tt.equal(n1.info().created, true, 'the first attach creates the segment');
  tt.same(shmFiles(ns), [`dvs.${ns}.0`]);
  const n2 = attach({ node: 0, namespace: ns });
  tt.equal(n2.info().created, false, 'the second one opens it');
  tt.equal(n1.stats().procs.length, 2, 'two attachments (one process may attach twice)');
  const other = attach({ node: 5, namespace: ns });
  tt.same(shmFiles(ns).sort(), [`dvs.${ns}.0`, `dvs.${ns}.5`], 'one segment per node');
  other.detach();
  n1.detach();
  tt.same(shmFiles(ns), [`dvs.${ns}.0`], 'still there while n2 is attached');
  n2.detach();
  assertNoShm(tt, ns);

  // The same with a child process attached: its exit (after detach) removes it.
  const child = spawnFixture(tt, 'server', [ns, 0, 1, 1, 'idle']);
  tt.equal(await child.line(), 'ready');
  const n3 = attach({ node: 0, namespace: ns });
  tt.equal(n3.info().created, false);
  n3.detach();
  tt.same(shmFiles(ns), [`dvs.${ns}.0`], 'kept while the child is attached');
  child.kill('SIGTERM');
  await child.exit();
  // SIGTERM kills the child without detaching: the segment stays until a
  // later attach reaps it; that attach's detach then removes it.
  const n4 = attach({ node: 0, namespace: ns });
  tt.same(n4.stats().procs.map((p) => p.pid), [process.pid], 'the dead child was reaped on attach');
  n4.detach();
  assertNoShm(tt, ns);
});

t.test('attach({ create: false }) only joins an existing node', async (tt) => {
  const ns = `${base}-nocreate`;
  tt.throws(() => attach({ node: 0, namespace: ns, create: false }), { code: 'EDVSDVSINIT' }, 'no node yet: EDVSDVSINIT');
  tt.same(shmFiles(ns), [], 'and no segment was created');
  const n1 = attach({ node: 0, namespace: ns });
  const n2 = attach({ node: 0, namespace: ns, create: false });
  tt.equal(n2.info().created, false, 'joins the existing one');
  n1.detach();
  n2.detach();
  assertNoShm(tt, ns);
});

// A process that ends without calling detach() is still the last one to
// leave: its segment should go with it, however it ends.
for (const how of ['detach', 'natural', 'exit', 'throw', 'reject']) {
  t.test(`a process that ends by ${how} leaves no segment behind`, async (tt) => {
    const ns = `${base}-${how}`;
    const child = spawnFixture(tt, 'exiter', [ns, 0, how]);
    tt.equal(await child.line(), 'ready');
    tt.same(shmFiles(ns), [`dvs.${ns}.0`], 'the child created the segment');
    child.send('go');
    const e = await child.exit();
    tt.same(e.signal, null, 'the child exited (no signal)');
    tt.same(shmFiles(ns), [], `no /dev/shm/dvs.${ns}.* after the child ended by ${how}`);
    // Whatever happened, a new attach recovers and the last detach cleans up.
    const n = attach({ node: 0, namespace: ns });
    tt.same(n.stats().procs.map((p) => p.pid), [process.pid]);
    tt.same(n.stats().endpoints, []);
    n.detach();
    assertNoShm(tt, ns);
  });
}
