import { cpus, release } from 'node:os';

export interface HostInfo {
  readonly cpus: number;
  readonly model: string;
  readonly kernel: string;
  readonly node: string;
}

export function hostInfo(): HostInfo {
  const list = cpus();
  return { cpus: list.length, model: list[0]?.model.trim() ?? 'unknown', kernel: release(), node: process.version };
}
