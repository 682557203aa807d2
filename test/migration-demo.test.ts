// migration-demo.test.ts — `dvs demo` (what `npm start` runs): the 3-node
// cluster demo ends by itself with status 0, prints one line per migration
// (from → to, downtime, held, client latency) and a summary with 0 failed,
// lost, duplicated and reordered; nothing of it is left running.
import t from 'tap';
import { runCli } from './cluster-helpers.js';

t.test('dvs demo: migrations under client load, then a clean summary and exit 0', async (tt) => {
  const r = await runCli(tt, ['demo', '--migrations', '4', '--clients', '3', '--interval', '100'], 120000);
  tt.equal(r.code, 0, `exit status 0 (stderr: ${r.stderr.trim()})`);
  const lines = r.stdout.split('\n');
  const migs = lines.filter((l) => /^ #\d+ +node \d → node \d +downtime +[\d.]+ ms +total +[\d.]+ ms +held +\d+ calls \+ +\d+ queued msgs +clients p50 +[\d.]+ ms +p99 +[\d.]+ ms$/.test(l));
  tt.equal(migs.length, 4, 'one line per migration');
  tt.same(
    migs.map((l) => /node (\d) → node (\d)/.exec(l)!.slice(1).map(Number)),
    [
      [1, 2],
      [2, 3],
      [3, 1],
      [1, 2],
    ],
    'round-robin over the three nodes',
  );
  tt.match(r.stdout, /summary: 4 migrations committed: downtime p50/, 'a summary');
  tt.match(r.stdout, /\d+ calls and \d+ one-way messages by 3 clients: failed 0, lost 0, duplicated 0, reordered 0\n/, '0 failed, lost, duplicated, reordered');
  tt.match(r.stdout, /\nok$/, 'and ok');
  const ns = /namespace (demo-\d+)/.exec(r.stdout)?.[1];
  tt.ok(ns, 'the output names its namespace');
  const { readdirSync } = await import('node:fs');
  tt.same(readdirSync('/dev/shm').filter((f) => f.startsWith(`dvs.${ns}.`)), [], 'no arena left in /dev/shm');
});
