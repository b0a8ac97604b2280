import { AppConfig } from '../config/app-config';
import { Instance } from '../instances/instance.entity';
import { Allocation } from './allocation.entity';
import { AllocationFailure, AllocationState } from './allocation-state';

export interface AllocationView {
  id: number;
  url: string;
  packetTracer: string | null;
  vnc: string | null;
  createdAt: Date;
  deletedAt: Date | null;
  status: AllocationState;
  stateReason: string;
  failure: AllocationFailure | null;
  instanceId: number | null;
  instance: string | null;
  file: string | null;
  loadedFile: string | null;
  leaseSeconds: number;
  expiresAt: Date | null;
  activatedAt: Date | null;
  labels: Record<string, string>;
}

export function presentAllocation(config: AppConfig, base: string, allocation: Allocation, instance: Pick<Instance, 'host' | 'ports'> | null): AllocationView {
  const host = instance ? config.docker.hosts.find((candidate) => candidate.name === instance.host) : undefined;
  const open = allocation.state === 'active';
  const address = (portName: string | undefined): string | null => {
    const port = portName === undefined ? undefined : instance?.ports?.[portName];
    return open && host && port !== undefined ? `${host.publicAddress}:${port}` : null;
  };
  const names = Object.keys(config.workload.ports);
  return {
    id: allocation.id,
    url: `${base}/allocations/${allocation.id}`,
    packetTracer: address(names[0]),
    vnc: address('vnc' in config.workload.ports ? 'vnc' : names[1]),
    createdAt: allocation.createdAt,
    deletedAt: allocation.deletedAt,
    status: allocation.state,
    stateReason: allocation.stateReason,
    failure: allocation.failure,
    instanceId: allocation.instanceId,
    instance: allocation.instanceId === null ? null : `${base}/instances/${allocation.instanceId}`,
    file: allocation.fileUrl,
    loadedFile: allocation.loadedFile,
    leaseSeconds: allocation.leaseSeconds,
    expiresAt: allocation.expiresAt,
    activatedAt: allocation.activatedAt,
    labels: allocation.labels,
  };
}
