// helpers.ts — shared by the test files (not a test itself): namespaces,
// child-process fixtures with line-based I/O and guaranteed cleanup, and
// checks that nothing is left behind in /dev/shm.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repo root: the nearest ancestor of this file that holds package.json (works from test/ and dist/test/). */
export const ROOT: string = (() => {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) {
    const up = dirname(d);
    if (up === d) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
    d = up;
  }
  return d;
})();

/** A tap Test, as far as these helpers use it. */
export interface T {
  teardown(fn: () => unknown): void;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  same(found: any, wanted: any, ...rest: any[]): boolean;
  comment(...args: any[]): void;
}

let nsCounter = 0;
/** A namespace unique to this process and test file (and call): runs never collide. */
export function uniqueNs(name: string): string {
  return `t-${process.pid}-${name}${nsCounter++ ? '-' + nsCounter : ''}`;
}

/** /dev/shm files of a namespace. */
export function shmFiles(ns: string): string[] {
  const prefix = `dvs.${ns}.`;
  try {
    return readdirSync('/dev/shm').filter((f) => f.startsWith(prefix));
  } catch {
    return [];
  }
}

/** Asserts that no segment of `ns` remains in /dev/shm. */
export function assertNoShm(t: T, ns: string): void {
  t.same(shmFiles(ns), [], `no /dev/shm/dvs.${ns}.* left behind`);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One turn of the event loop: lets batched releases (flushed in a microtask) and doorbells run. */
export const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Rejects with an Error naming `what` if `p` does not settle within `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const to = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, to]).finally(() => clearTimeout(timer));
}

/** Settles to the error's code (or 'resolved') within `ms`. */
export async function codeOf(p: Promise<unknown> | (() => unknown), ms = 10000): Promise<string> {
  try {
    const r = typeof p === 'function' ? p() : p;
    if (r instanceof Promise) await within(r, ms, 'operation to settle');
    return 'resolved';
  } catch (e) {
    return (e as { code?: string }).code ?? `non-dvs error: ${(e as Error).message}`;
  }
}

/** The environment for children: without tap's loaders and coverage hooks (they slow startup a lot). */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^(NODE_OPTIONS|NODE_V8_COVERAGE|_TAPJS_|TAP|TS_NODE_|DVS_)/.test(k)) continue;
    env[k] = v;
  }
  return { ...env, ...extra };
}

const ENV_BIN = existsSync('/usr/bin/env') ? '/usr/bin/env' : 'env';
const ENV_UNSET = ['-u', 'NODE_OPTIONS', '-u', 'NODE_V8_COVERAGE'];

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A child process read line by line. */
export class Child {
  readonly proc: ChildProcess;
  readonly pid: number;
  stderr = '';
  private lines: string[] = [];
  private waiters: { resolve: (l: string) => void; reject: (e: Error) => void }[] = [];
  private partial = '';
  private exitInfo: Exit | null = null;
  private exitWaiters: ((e: Exit) => void)[] = [];

  /** Runs `argv` (command first). */
  constructor(
    readonly name: string,
    argv: string[],
    env: NodeJS.ProcessEnv = childEnv(),
  ) {
    // tap's process-info hook re-adds its --import to NODE_OPTIONS of every
    // child it sees spawned (which makes node start several times slower);
    // env(1) drops it again just before exec (same pid).
    this.proc = spawn(ENV_BIN, [...ENV_UNSET, ...argv], { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.pid = this.proc.pid ?? -1;
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => {
      this.partial += d;
      let i: number;
      while ((i = this.partial.indexOf('\n')) >= 0) {
        const line = this.partial.slice(0, i);
        this.partial = this.partial.slice(i + 1);
        const w = this.waiters.shift();
        if (w) w.resolve(line);
        else this.lines.push(line);
      }
    });
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (d: string) => {
      if (this.stderr.length < 20000) this.stderr += d;
    });
    this.proc.stdin!.on('error', () => {});
    this.proc.on('error', (e) => {
      this.stderr += `\n[spawn error] ${e.message}`;
      this.onExit({ code: null, signal: null });
    });
    this.proc.on('close', (code, signal) => this.onExit({ code, signal }));
  }

  private onExit(e: Exit): void {
    if (this.exitInfo) return;
    this.exitInfo = e;
    for (const w of this.waiters.splice(0))
      w.reject(new Error(`${this.name} (pid ${this.pid}) exited (${e.code ?? e.signal}) before printing a line; stderr: ${this.stderr.trim()}`));
    for (const w of this.exitWaiters.splice(0)) w(e);
  }

  get exited(): boolean {
    return this.exitInfo !== null;
  }

  /** The next stdout line. */
  line(ms = 30000): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (this.exitInfo)
      return Promise.reject(new Error(`${this.name} (pid ${this.pid}) has exited (${this.exitInfo.code ?? this.exitInfo.signal}); stderr: ${this.stderr.trim()}`));
    let w!: { resolve: (l: string) => void; reject: (e: Error) => void };
    const p = new Promise<string>((resolve, reject) => this.waiters.push((w = { resolve, reject })));
    return within(p, ms, `a line from ${this.name} (pid ${this.pid}); stderr: ${this.stderr.trim()}`).catch((e) => {
      // Drop our waiter so that a later line is not swallowed.
      this.waiters = this.waiters.filter((x) => x !== w);
      throw e;
    });
  }

  /** Reads lines until one equals `want` (other lines are returned in order). */
  async expect(want: string, ms = 30000): Promise<string[]> {
    const deadline = Date.now() + ms;
    const other: string[] = [];
    for (;;) {
      const l = await this.line(Math.max(1, deadline - Date.now()));
      if (l === want) return other;
      other.push(l);
    }
  }

  /** The next line parsed as JSON. */
  async json<T = unknown>(ms = 30000): Promise<T> {
    const l = await this.line(ms);
    try {
      return JSON.parse(l) as T;
    } catch {
      throw new Error(`${this.name}: expected a JSON line, got ${JSON.stringify(l)}; stderr: ${this.stderr.trim()}`);
    }
  }

  send(line: string): void {
    this.proc.stdin!.write(line + '\n');
  }

  kill(sig: NodeJS.Signals = 'SIGKILL'): void {
    if (!this.exitInfo) {
      try {
        process.kill(this.pid, sig);
      } catch {
        /* already gone */
      }
    }
  }

  /** Resolves when the child has exited; rejects (after SIGKILLing it) if that takes longer than `ms`. */
  exit(ms = 30000): Promise<Exit> {
    if (this.exitInfo) return Promise.resolve(this.exitInfo);
    const p = new Promise<Exit>((r) => this.exitWaiters.push(r));
    return within(p, ms, `${this.name} (pid ${this.pid}) to exit`).catch((e) => {
      this.kill('SIGKILL');
      throw e;
    });
  }

  /** SIGKILL and wait for the exit (bounded). */
  async killAndWait(ms = 10000): Promise<Exit> {
    this.kill('SIGKILL');
    return this.exit(ms);
  }
}

/** Compiled fixture path: test/fixtures/<name>.ts -> dist/test/fixtures/<name>.js. */
export function fixturePath(name: string): string {
  return join(ROOT, 'dist', 'test', 'fixtures', `${name}.js`);
}

/**
 * Spawns a fixture (compiled by `tsc -p tsconfig.json`) with `args`; the child is
 * SIGKILLed on teardown if it is still running, and teardown waits (bounded) for it.
 */
export function spawnFixture(t: T, name: string, args: (string | number)[], extraEnv: Record<string, string> = {}): Child {
  const file = fixturePath(name);
  if (!existsSync(file)) throw new Error(`${file} is missing: run \`npx tsc -p tsconfig.json\` first`);
  const c = new Child(name, [process.execPath, file, ...args.map(String)], childEnv(extraEnv));
  t.teardown(async () => {
    if (!c.exited) {
      c.kill('SIGKILL');
      await c.exit(10000).catch(() => {});
    }
  });
  return c;
}

/** Spawns a native executable, with the same cleanup guarantees as spawnFixture. */
export function spawnExe(t: T, file: string, args: (string | number)[], extraEnv: Record<string, string> = {}): Child {
  const c = new Child(file.split('/').pop()!, [file, ...args.map(String)], childEnv(extraEnv));
  t.teardown(async () => {
    if (!c.exited) {
      c.kill('SIGKILL');
      await c.exit(10000).catch(() => {});
    }
  });
  return c;
}

/** Simple checksum (FNV-1a, 32 bit) of a byte array. */
export function fnv1a(u8: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < u8.length; i++) {
    h ^= u8[i];
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** Deterministic pseudo-random bytes. */
export function pattern(n: number, seed = 1): Uint8Array {
  const u8 = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    u8[i] = x & 0xff;
  }
  return u8;
}

/** "R (running)", "S (sleeping) in futex_wait_queue", ... for diagnostics. */
export function procState(pid: number): string {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = st.slice(st.lastIndexOf(')') + 2).split(' ')[0];
    let wchan = '';
    try {
      wchan = readFileSync(`/proc/${pid}/wchan`, 'utf8');
    } catch {
      /* not readable */
    }
    return `${state}${wchan && wchan !== '0' ? ' in ' + wchan : ''}`;
  } catch {
    return 'gone';
  }
}

/** Waits for a child's "ready" line (anything else before it is an error). */
export async function ready(c: Child): Promise<void> {
  const other = await within(c.expect('ready'), 30000, `${c.name} ready`);
  if (other.length) throw new Error(`${c.name}: unexpected output ${JSON.stringify(other)}`);
}

/** C build tools that are not installed (tests that build C skip with their names). */
export const missingCTools: string[] = ['make', 'gcc', 'g++'].filter(
  (tool) => spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status !== 0,
);

/** Builds the C library and examples; returns the directory holding c_server and c_pingpong. */
export function buildC(): { dir?: string; error?: string } {
  const r = spawnSync('make', ['-C', join(ROOT, 'native')], { encoding: 'utf8', timeout: 200000 });
  if (r.status !== 0) return { error: `make -C native failed (${r.status ?? r.signal}):\n${r.stdout}\n${r.stderr}` };
  // The Makefile's output directory (OUT) has been build/native and build-c: take the freshest.
  const dirs = ['build-c', 'build/native']
    .map((d) => join(ROOT, d))
    .filter((d) => existsSync(join(d, 'c_server')) && existsSync(join(d, 'c_pingpong')))
    .sort((a, b) => statSync(join(b, 'c_server')).mtimeMs - statSync(join(a, 'c_server')).mtimeMs);
  return dirs.length ? { dir: dirs[0] } : { error: 'make succeeded but c_server/c_pingpong were not found' };
}
