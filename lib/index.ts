// dvs — Distributed Virtualization System runtime for Node.js.
export { attach, Node, type AttachOptions, AUTO_EP_BASE, AUTO_EP_PER_NODE } from './node.js';
export { Endpoint, type ReceiveOptions, type SyncOptions, type TimeoutOptions } from './endpoint.js';
export { Message, type MessageKind, type Reply, type ReplyTarget } from './message.js';
export { DvsError, codes, type DvsErrorCode } from './errors.js';
export { ANY, MAX_PAYLOAD, MAX_DC, MAX_EP, type Address, type Payload } from './validate.js';
export type { NativeStats as NodeStats } from './native.js';
export { Agent, startAgent, type AgentStatus, type PsRow, type PsResult, type PsNodeStatus, type NodesResult, type NodeRow } from './agent/agent.js';
export { Cluster, connectCluster, type ClusterEntry, type ClusterEvents, type ConnectOptions, type WaitForBindOptions, type PsOptions } from './cluster/cluster.js';
export type { DcInfo } from './dc/dc-table.js';
export type { Member, MemberState, Membership, View } from './membership/membership.js';
export type { AgentConfig, PeerAddress, HostPort, DcSpec } from './agent/config.js';
export type { FaultOptions } from './native.js';
