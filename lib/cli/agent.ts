// agent.ts — `dvs agent`: runs this node's agent in the foreground until SIGTERM/SIGINT.
import { Agent } from '../agent/agent.js';
import { checkConfig, parseDcs, parseFault, parseHostPort, parsePeers, readConfigFile, type AgentConfig } from '../agent/config.js';
import type { LogLevel } from '../agent/log.js';
import { DvsError } from '../errors.js';
import { intFlag, type Flags } from './args.js';

export const agentHelp =
  'agent --node N --listen HOST:PORT [--seeds ID=HOST:PORT,... | --registry etcd://HOST:PORT[,HOST:PORT]] [--peers ID=HOST:PORT,...] [--dc DC:N,N...] [--config FILE]\n' +
  '        [--namespace NS] [--fault loss=P,dup=P,reorder=P,delay_us=N] [--dead-after-ms N] [--suspect-ms N]\n' +
  '        [--heartbeat-ms N] [--mtu N] [--spin-us N] [--log-level debug|info|warn|error]    run the node agent (foreground)';

export function configFromFlags(f: Flags): AgentConfig {
  const file = f.values.get('config');
  const base: Partial<AgentConfig> = file ? readConfigFile(file) : {};
  const v = (k: string): string | undefined => f.values.get(k);
  const opt = (k: string, max: number): number | undefined => (v(k) === undefined ? undefined : intFlag(f, k, 0, 0, max));
  const node = v('node') !== undefined ? intFlag(f, 'node', 0, 0, 1023) : base.node;
  const listen = v('listen') !== undefined ? parseHostPort(v('listen')!, '--listen') : base.listen;
  if (node === undefined) throw new DvsError('EDVSBADNODEID', 'dvs agent needs --node (or "node" in --config)');
  if (listen === undefined) throw new DvsError('EDVSINVAL', 'dvs agent needs --listen HOST:PORT (or "listen" in --config)');
  const fault = v('fault') ?? process.env.DVS_FAULT;
  const level = v('log-level');
  if (level !== undefined && !['debug', 'info', 'warn', 'error'].includes(level))
    throw new DvsError('EDVSINVAL', '--log-level is debug, info, warn or error');
  return checkConfig({
    ...base,
    node,
    listen,
    peers: v('peers') !== undefined ? parsePeers(v('peers')!) : (base.peers ?? []),
    registry: v('registry') ?? base.registry,
    seeds: v('seeds') !== undefined || f.flags.has('seeds') ? parsePeers(v('seeds') ?? '', '--seeds') : base.seeds,
    suspectMs: opt('suspect-ms', 3600000) ?? base.suspectMs,
    dcs: v('dc') !== undefined ? parseDcs(v('dc')!) : base.dcs,
    namespace: v('namespace') ?? base.namespace,
    fault: fault !== undefined ? parseFault(fault) : base.fault,
    deadAfterMs: opt('dead-after-ms', 3600000) ?? base.deadAfterMs,
    heartbeatMs: opt('heartbeat-ms', 60000) ?? base.heartbeatMs,
    mtu: opt('mtu', 65507) ?? base.mtu,
    spinUs: opt('spin-us', 1000000) ?? base.spinUs,
    windowBytes: opt('window-bytes', 1 << 30) ?? base.windowBytes,
    logLevel: (level as LogLevel | undefined) ?? base.logLevel,
  });
}

export async function agent(f: Flags): Promise<number> {
  // Signals are handled from the start: a SIGTERM that arrives while the
  // agent is still starting (its control socket answers before the registry
  // has connected) stops it cleanly once started, instead of killing the
  // process with its arena left behind.
  let signalled!: () => void;
  const stopRequested = new Promise<void>((resolve) => (signalled = resolve));
  const onSignal = (): void => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    signalled();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const a = await Agent.start(configFromFlags(f));
  const keep = setInterval(() => {}, 1 << 30);  // the loop stays alive until a signal
  await stopRequested;
  clearInterval(keep);
  await a.stop();
  return 0;
}
