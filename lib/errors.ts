// errors.ts — DvsError and the stable error codes (the names and numbers of
// the original M3-IPC, see native/include/dvs.h).

export const codes = {
  EDVSINTR: -4,
  EDVS2BIG: -7,
  EDVSAGAIN: -11,
  EDVSNOMEM: -12,
  EDVSBUSY: -16,
  EDVSINVAL: -22,
  EDVSNOSPC: -28,
  EDVSNOSYS: -38,
  EDVSTIMEDOUT: -61,
  EDVSNOTCONN: -64,
  EDVSSRCDIED: -108,
  EDVSDSTDIED: -109,
  EDVSBADNODEID: -301,
  EDVSBADDCID: -302,
  EDVSENDPOINT: -306,
  EDVSNOTBIND: -310,
  EDVSNONODE: -316,
  EDVSDVSINIT: -318,
  EDVSNODCNODE: -319,
  EDVSPROCSTS: -324,
  EDVSMIGRATE: -332,
  EDVSSLOTUSED: -337,
  EDVSBADRANGE: -338,
  EDVSARENA: -601,
} as const;

export type DvsErrorCode = keyof typeof codes;

const names = new Map<number, DvsErrorCode>(
  (Object.entries(codes) as [DvsErrorCode, number][]).map(([k, v]) => [v, k]),
);

const texts: Record<DvsErrorCode, string> = {
  EDVSINTR: 'interrupted',
  EDVS2BIG: 'payload larger than 1 MiB',
  EDVSAGAIN: 'would have to wait',
  EDVSNOMEM: 'not enough shared memory',
  EDVSBUSY: 'resource busy',
  EDVSINVAL: 'invalid argument',
  EDVSNOSPC: 'no free slot in the endpoint or process table',
  EDVSNOSYS: 'not available (yet)',
  EDVSTIMEDOUT: 'timed out',
  EDVSNOTCONN: 'link to the node is down',
  EDVSSRCDIED: 'source died',
  EDVSDSTDIED: 'destination died',
  EDVSBADNODEID: 'bad node id',
  EDVSBADDCID: 'bad DC id, or a DC other than the endpoint\'s',
  EDVSENDPOINT: 'endpoint number out of range',
  EDVSNOTBIND: 'endpoint not bound',
  EDVSNONODE: 'node does not hold the endpoint',
  EDVSDVSINIT: 'not attached to a node',
  EDVSNODCNODE: 'node is not in the DC',
  EDVSPROCSTS: 'wrong process state',
  EDVSMIGRATE: 'endpoint is migrating',
  EDVSSLOTUSED: 'endpoint already bound',
  EDVSBADRANGE: 'value out of range',
  EDVSARENA: 'shared-memory arena incompatible or corrupt',
};

/** Every error dvs raises: `code` is a stable name such as `EDVSNOTBIND`, `errno` its number. */
export class DvsError extends Error {
  readonly code: DvsErrorCode | 'EDVSUNKNOWN';
  readonly errno: number;
  constructor(code: DvsErrorCode | number, detail?: string) {
    const name = typeof code === 'number' ? names.get(code) : code;
    const errno = typeof code === 'number' ? code : codes[code];
    const text = name ? texts[name] : `unknown dvs error ${errno}`;
    super(`${name ?? 'EDVSUNKNOWN'}: ${detail && detail !== text ? detail : text}`);
    this.name = 'DvsError';
    this.code = name ?? 'EDVSUNKNOWN';
    this.errno = errno;
  }
}

/** Throws a DvsError for a negative native result; returns non-negative results unchanged. */
export function check(r: number, detail?: string): number {
  if (r < 0) throw new DvsError(r, detail);
  return r;
}
