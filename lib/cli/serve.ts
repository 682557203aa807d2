// serve.ts — `dvs serve MODULE [ARGS…] --dc D --ep E`: runs a service module on
// an endpoint (lib/serve/), migratable by its agent (the `state` backend).
import { DvsError } from '../errors.js';
import { ServiceRuntime, type ServeEvent } from '../serve/runtime.js';
import { expectArgs, intArg, intFlag, type Flags } from './args.js';

export const serveHelp =
  'serve MODULE [ARGS...] --dc D --ep E [--node N] [--namespace NS] [--name NAME] [--json]    run a service module on endpoint E of DC D\n' +
  '        (it exports handle(msg), optionally snapshot()/restore(bytes)/init(ctx)); a migration\'s destination is started\n' +
  '        by the agent with --restore FILE or --standby';

function line(e: ServeEvent): string {
  switch (e.event) {
    case 'serving':
      return `serving ${e.dc}:${e.ep} on node ${e.node} (pid ${e.pid}${e.restored ? ', restored' : ''}${e.migratable ? '' : ', no agent: not migratable'}): ${e.module}`;
    case 'quiesced':
      return `migration ${e.mig}: quiesced, ${e.messages} message(s) kept, ${e.stateBytes} bytes of state, image of ${e.imageBytes} bytes`;
    case 'resumed':
      return `migration ${e.mig}: rolled back, serving again (${e.messages} kept message(s) first)`;
    case 'failed':
      return `migration ${e.mig}: failed here: ${e.code}: ${e.message}`;
    case 'detached':
      return `migration ${e.mig}: committed, the endpoint has moved; exiting`;
    case 'restored':
      return `migration ${e.mig}: image restored (${e.stateBytes} bytes of state, ${e.messages} message(s)); waiting for the endpoint`;
    case 'stopped':
      return 'stopped';
  }
}

export async function serve(f: Flags): Promise<number> {
  expectArgs(f, serveHelp, { values: ['dc', 'ep', 'node', 'namespace', 'name', 'restore'], booleans: ['json', 'standby'], min: 1, max: 1000 });
  const [module, ...args] = f.positional;
  const need = (k: string): string => {
    const v = f.values.get(k);
    if (v === undefined) throw new DvsError('EDVSINVAL', `dvs serve needs --${k} (usage: dvs ${serveHelp.split('    ')[0]})`);
    return v;
  };
  const dc = intArg(need('dc'), '--dc');
  const ep = intArg(need('ep'), '--ep');
  const node = f.values.has('node') ? intFlag(f, 'node', 0, 0, 1023) : undefined;
  const json = f.flags.has('json');
  const print = (e: ServeEvent): void => void process.stdout.write((json ? JSON.stringify(e) : line(e)) + '\n');
  const fatal = (e: unknown): never => {
    process.stderr.write(`dvs: ${e instanceof Error ? e.message : String(e)}\n`);
    // The module may hold timers or sockets of its own: the service is over, so is the process.
    process.exit(1);
  };
  // The first SIGTERM/SIGINT stops after the current message (after a migration in progress); a second one exits at once.
  let signals = 0;
  let rt: ServiceRuntime | null = null;
  const onSignal = (): void => {
    if (++signals === 1) rt?.stop();
    else process.exit(1);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  rt = await ServiceRuntime.start({
    module,
    args,
    dc,
    ep,
    node,
    namespace: f.values.get('namespace'),
    name: f.values.get('name'),
    restore: f.values.get('restore'),
    standby: f.flags.has('standby'),
    onEvent: print,
    onWarn: (m) => void process.stderr.write(`dvs serve: ${m}\n`),
  }).catch(fatal);
  if (signals) rt.stop();  // a signal during the start
  process.exit(await rt.done.catch(fatal));
}
