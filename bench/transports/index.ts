/** Every transport the benchmarks know about, in table order. Append new ones here. */
import type { Transport } from '../transport.js';
import { dvsAsync, dvsAsyncSleep, dvsSpin } from './dvs.js';
import { nodeChildIpc } from './node-child-ipc.js';
import { nodeMessagePort } from './node-messageport.js';
import { nodeUds } from './node-uds.js';
import { zeromqIpc } from './zeromq.js';

export const transports: Transport[] = [dvsSpin, dvsAsync, dvsAsyncSleep, nodeUds, nodeMessagePort, nodeChildIpc, zeromqIpc];
