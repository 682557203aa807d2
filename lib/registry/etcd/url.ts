// url.ts — the etcd registry address: `etcd://host:port[,host:port...][?ttl=S]`
// (no etcd client is loaded here: the agent's config checks it).
import { DvsError } from '../../errors.js';

export interface EtcdUrl {
  /** 'host:port' per etcd member (client URL, plain http). */
  endpoints: string[];
  /** Lease TTL in seconds (node liveness: a node whose agent stops renewing it is dead this long after). */
  ttlSeconds: number;
  /** The address as written, for messages. */
  text: string;
}

/** etcd's smallest lease TTL with its default timing (heartbeat 100 ms, election 1000 ms). */
export const DEFAULT_TTL_S = 2;
const HOST = /^(?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$/;

export function parseEtcdUrl(s: string): EtcdUrl {
  const bad = (why: string): never => {
    throw new DvsError('EDVSINVAL', `--registry must be etcd://<host>:<port>[,<host>:<port>...][?ttl=<seconds>] (${why}), got '${s}'`);
  };
  if (typeof s !== 'string' || !s.startsWith('etcd://')) bad('not an etcd:// address');
  const rest = s.slice('etcd://'.length);
  const q = rest.indexOf('?');
  const hosts = q < 0 ? rest : rest.slice(0, q);
  let ttlSeconds = DEFAULT_TTL_S;
  if (q >= 0) {
    for (const part of rest.slice(q + 1).split('&').filter(Boolean)) {
      const [k, v] = part.split('=');
      if (k !== 'ttl' || v === undefined || !/^\d{1,6}$/.test(v) || Number(v) < 1) bad(`unknown or bad option '${part}'`);
      ttlSeconds = Number(v);
    }
  }
  const endpoints = hosts.split(',').map((h) => h.trim());
  if (!endpoints.length || endpoints.some((h) => !h)) bad('no host');
  for (const h of endpoints) {
    const i = h.lastIndexOf(':');
    if (i <= 0) bad(`'${h}' has no port`);
    const port = h.slice(i + 1);
    if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) bad(`bad port in '${h}'`);
    if (!HOST.test(h.slice(0, i))) bad(`bad host in '${h}'`);
  }
  return { endpoints, ttlSeconds, text: s };
}
