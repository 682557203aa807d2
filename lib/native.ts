// native.ts — loads the addon and describes its interface (native/addon).
import { createRequire } from 'node:module';
import { basename, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DvsError } from './errors.js';
import type { AttachOptions } from './node.js';

export interface NativeLayout {
  outWhy: number;
  outDstGen: number;
  outCallId: number;
  outOffLo: number;
  outOffHi: number;
  outTaken: number;
  msgBase: number;
  msgInts: number;
  maxBatch: number;
  releaseBase: number;
}

export interface NativeStats {
  node: number;
  segment: string;
  bytes: number;
  procs: { slot: number; pid: number; gen: number }[];
  endpoints: { dc: number; ep: number; pid: number; gen: number; msgsIn: number; msgsOut: number; queued: number }[];
  classes: { size: number; blocks: number; inUse: number }[];
  reapedProcs: number;
  lockRecoveries: number;
  droppedReplies: number;
}

export interface NativeInfo {
  node: number;
  name: string;
  proc: number;
  pid: number;
  size: number;
  created: boolean;
  wake: 'doorbell' | 'thread';
  asyncSpinUs: number;
  /** pid of the node agent serving this arena (0: none). */
  agentPid: number;
}

/** What NativeEngine's constructor reads (lib/agent builds it). */
export interface NativeEngineConfig {
  node: number;
  ns?: string;
  host: string;
  port: number;
  incarnation: number;
  mtu?: number;
  windowBytes?: number;
  heartbeatMs?: number;
  deadAfterMs?: number;
  spinUs?: number;
  invoker?: boolean;
  fault?: FaultOptions;
  maxProcs?: number;
  maxEndpoints?: number;
  inboxCells?: number;
  replyCells?: number;
  poolMib?: number;
}

/** Fault injection in the transport (probabilities in [0, 1]). */
export interface FaultOptions {
  loss?: number;
  dup?: number;
  reorder?: number;
  delayUs?: number;
  jitterUs?: number;
  seed?: number;
}

/** Engine events (engine.h EngineEvent::Type). */
export const EngineEvent = { PeerUp: 1, PeerDown: 2, Control: 3, BindsChanged: 4, Warning: 5 } as const;

export interface EngineEndpoint {
  dc: number;
  ep: number;
  gen: number;
  remote: boolean;
  node: number;
  pid: number;
  msgsIn: number;
  msgsOut: number;
  /** The name given at bind ('' when none; always '' for a remote endpoint's proxy). */
  name: string;
}

export interface NativeEngine {
  port(): number;
  addPeer(node: number, host: string, port: number): void;
  removePeer(node: number): void;
  /** [dc, ep, gen, pid] per endpoint. */
  setRemote(peer: number, eps: Uint32Array): void;
  sendControl(peer: number, bytes: Uint8Array): void;
  setFault(f: FaultOptions): void;
  /**
   * The DCs of the cluster's DC table, and those of them this node belongs to.
   * DC d is usable on this node iff d is not defined, or this node is a member.
   */
  setDcs(defined: Uint32Array, member: Uint32Array): void;
  /** Migration START/COMMIT: senders into (dc, ep) on this node wait while `on` (EDVSNOTBIND if nothing is bound there). */
  setMigrating(dc: number, ep: number, on: boolean): void;
  /** Migration: a FENCE marker behind everything in this node's proxy for (dc, ep) (EDVSNOTBIND: no proxy; EDVSAGAIN: proxy inbox full, retry). */
  fence(dc: number, ep: number, token: number): void;
  /** Migration COMMIT at the source: the local endpoint becomes a proxy to `node` (remote incarnation `gen`) in place. */
  toProxy(dc: number, ep: number, node: number, gen: number): void;
  /** Migration COMMIT at the destination: this node's proxy becomes a local endpoint of process `pid` in place. */
  adopt(dc: number, ep: number, pid: number, name?: string): void;
  /** Migration COMMIT on a client node: this node's proxy for (dc, ep) points at `node` (remote incarnation `gen`) now. */
  repoint(dc: number, ep: number, node: number, gen: number): void;
  /** Migration: replies from `node` to these local calls [dc, callerEp, callerGen, callId, dstEp] × n are expected. */
  expectReplies(node: number, calls: Uint32Array): void;
  /** Migration ROLLBACK at the source: withdraws what expectReplies(node, calls) set up. */
  forgetReplies(node: number, calls: Uint32Array): void;
  /** Fault injection: drop every datagram to and from these peers (a partition); empty heals. */
  setPartition(nodes: Uint32Array): void;
  /** JSON (engine.cc refresh_stats). */
  stats(): string;
  endpoints(): EngineEndpoint[];
  reap(): void;
  close(): void;
}

/** What the addon's constructor reads: the public options, with the namespace as `ns`. */
export type NativeAttachOptions = Omit<AttachOptions, 'node' | 'namespace'> & { node: number; ns?: string; name?: string };

/** Payload arguments: (u8, -1, 0) copies u8; (null, offset, len) sends an allocated block. */
export interface NativeNode {
  arena(): ArrayBuffer;
  scratch(): ArrayBuffer;
  info(): NativeInfo;
  bind(dc: number, ep: number, name?: string): number;
  adopt(dc: number, ep: number): number;
  close(h: number): number;
  /** 0, an error code, or (the destination is on another node) the positive id of the pending acknowledgement. */
  send(h: number, dst: number, u8: Uint8Array | null, off: number, len: number): number;
  call(h: number, dst: number, u8: Uint8Array | null, off: number, len: number): number;
  /** Calls (default 1) and remote-send acknowledgements (default 0) settled or abandoned. */
  callEnd(h: number, calls?: number, acks?: number): void;
  receive(h: number, from: number, max: number, releases: number): number;
  replies(h: number, max: number): number;
  release(h: number, block: number): number;
  /** Frees the first n block ids of the scratch release area. */
  flushReleases(n: number): void;
  reply(h: number, dc: number, caller: number, gen: number, callId: number, u8: Uint8Array | null, off: number, len: number, callerNode: number): number;
  notify(h: number, dst: number, bits: number): number;
  alloc(h: number, len: number): number;
  /** Frees an allocated (unsent) block of this process. */
  freeAlloc(off: number): number;
  arm(h: number): number;
  armSpace(h: number, dst: number, why: number): number;
  verify(h: number, dst: number, gen: number): number;
  receiveSync(h: number, from: number, timeoutMs: number, spinNs: number): number;
  callSync(h: number, dst: number, u8: Uint8Array | null, off: number, len: number, timeoutMs: number, spinNs: number): number;
  sendSync(h: number, dst: number, u8: Uint8Array | null, off: number, len: number, timeoutMs: number): number;
  reap(): number;
  stats(): NativeStats | null;
  ref(): void;
  unref(): void;
  detach(): void;
}

/** The hot operations as plain functions (no per-call unwrap); see NativeNode::Fast. */
type FastOps = Pick<
  NativeNode,
  'send' | 'call' | 'receive' | 'replies' | 'reply' | 'arm' | 'callEnd' | 'flushReleases' | 'receiveSync' | 'callSync' | 'sendSync' | 'alloc'
>;

interface NativeNodeObject extends NativeNode {
  fast(): FastOps;
}

interface Binding {
  NativeNode: new (opts: NativeAttachOptions, onWake: () => void) => NativeNodeObject;
  NativeEngine: new (
    cfg: NativeEngineConfig,
    onEvent: (type: number, peer: number, incarnation: number, data: Buffer | string | undefined) => void,
  ) => NativeEngine;
  setErrorFactory(f: (code: number, detail: string) => Error): void;
  lastErrorDetail(): string;
  layout: NativeLayout;
}

const require = createRequire(import.meta.url);
const bindings = require('bindings') as (opts: { bindings: string; module_root: string }) => Binding;
// The package root holds build/: it is the parent of lib/ (sources) or of dist/ (compiled).
const libParent = fileURLToPath(new URL('..', import.meta.url));
const root = basename(libParent) === 'dist' ? dirname(libParent) : libParent;

export const binding: Binding = bindings({ bindings: 'dvs', module_root: root });
binding.setErrorFactory((code, detail) => new DvsError(code, detail));
export const layout: NativeLayout = binding.layout;

/** Attaches through the addon; hot operations are the fast plain functions, the rest the class's methods. */
export function openNative(opts: NativeAttachOptions, onWake: () => void): NativeNode {
  const n = new binding.NativeNode(opts, onWake);
  const f = n.fast();
  return {
    send: f.send,
    call: f.call,
    receive: f.receive,
    replies: f.replies,
    reply: f.reply,
    arm: f.arm,
    callEnd: f.callEnd,
    flushReleases: f.flushReleases,
    receiveSync: f.receiveSync,
    callSync: f.callSync,
    sendSync: f.sendSync,
    alloc: f.alloc,
    arena: () => n.arena(),
    scratch: () => n.scratch(),
    info: () => n.info(),
    bind: (dc, ep, name) => n.bind(dc, ep, name),
    adopt: (dc, ep) => n.adopt(dc, ep),
    close: (h) => n.close(h),
    release: (h, b) => n.release(h, b),
    notify: (h, d, b) => n.notify(h, d, b),
    freeAlloc: (off) => n.freeAlloc(off),
    armSpace: (h, d, w) => n.armSpace(h, d, w),
    verify: (h, d, g) => n.verify(h, d, g),
    reap: () => n.reap(),
    stats: () => n.stats(),
    ref: () => n.ref(),
    unref: () => n.unref(),
    detach: () => n.detach(),
  };
}

/** Field offsets inside one message descriptor of the scratch array. */
export const Desc = {
  Kind: 0,
  SrcDc: 1,
  SrcEp: 2,
  SrcNode: 3,
  OffLo: 4,
  OffHi: 5,
  Len: 6,
  Bits: 7,
  Status: 8,
  Block: 9,
  CallId: 10,
  SrcGen: 11,
} as const;

/** Message kinds as the core numbers them. */
export const Kind = { Send: 1, Call: 2, Reply: 3, Notify: 4, Fence: 6 } as const;
