// announce.ts — the simplest complete directory: every agent sends its full
// list of local endpoints to each peer when the link comes up and whenever the
// list changes. Lists are small (a few bytes per endpoint) and go over the
// same reliable, ordered channel as the data, so a peer never sees a message
// for an endpoint before the announcement that created its proxy.
import { isName } from '../validate.js';
import type { Directory, DirectoryEntry, DirectoryHost } from './directory.js';

const MAX = 0xffffff;
/** More endpoints than any arena holds (its table has at most 2^16 slots): a malformed announcement. */
const MAX_ENTRIES = 1 << 16;

function key(eps: readonly DirectoryEntry[]): string {
  return eps.map((e) => `${e.dc}:${e.ep}:${e.gen}:${e.pid}:${e.name ?? ''}`).join(',');
}

/** Validates a peer's announcement (it crossed the network). */
function parseEntries(x: unknown): DirectoryEntry[] | null {
  if (!Array.isArray(x) || x.length > MAX_ENTRIES) return null;
  const out: DirectoryEntry[] = [];
  for (const e of x) {
    if (!Array.isArray(e) || (e.length !== 4 && e.length !== 5)) return null;
    const [dc, ep, gen, pid, name = ''] = e as unknown[];
    if (![dc, ep, gen, pid].every((v) => Number.isInteger(v) && (v as number) >= 0)) return null;
    if ((dc as number) > 4095 || (ep as number) > MAX || (gen as number) > 0xffffffff || (pid as number) > 0xffffffff) return null;
    if (!isName(name)) return null;
    out.push(name ? { dc: dc as number, ep: ep as number, gen: gen as number, pid: pid as number, name } : { dc: dc as number, ep: ep as number, gen: gen as number, pid: pid as number });
  }
  return out;
}

export class AnnounceDirectory implements Directory {
  private local: DirectoryEntry[] = [];
  private localKey = '';
  private readonly peers = new Map<number, DirectoryEntry[]>();

  constructor(private readonly host: DirectoryHost) {}

  localChanged(eps: DirectoryEntry[]): void {
    const k = key(eps);
    if (k === this.localKey) return;
    this.local = eps;
    this.localKey = k;
    for (const n of this.host.peersUp()) this.announce(n);
  }

  peerUp(node: number): void {
    this.announce(node);
  }

  peerDown(_node: number): void {
    // Proxies stay: senders get EDVSNOTCONN while the link is down, and
    // traffic resumes when it returns (the peer then announces again).
  }

  forget(node: number): void {
    this.peers.delete(node);
  }

  receive(node: number, msg: unknown): void {
    const m = msg as { t?: unknown; eps?: unknown };
    if (m.t !== 'eps') return;
    const eps = parseEntries(m.eps);
    if (!eps) {
      this.host.warn('malformed endpoint announcement ignored', { peer: node });
      return;
    }
    this.peers.set(node, eps);
    this.host.apply(node, eps);
  }

  remote(): ReadonlyMap<number, readonly DirectoryEntry[]> {
    return this.peers;
  }

  private announce(node: number): void {
    this.host.send(node, { k: 'dir', t: 'eps', eps: this.local.map((e) => (e.name ? [e.dc, e.ep, e.gen, e.pid, e.name] : [e.dc, e.ep, e.gen, e.pid])) });
  }
}
