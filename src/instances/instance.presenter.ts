import { AppConfig } from '../config/app-config';
import { Instance } from './instance.entity';
import { InstanceState } from './instance-state';

/** The original API's status vocabulary. */
export function legacyStatus(state: InstanceState): string {
  switch (state) {
    case 'creating':
    case 'starting':
      return 'starting';
    case 'idle':
      return 'deallocated';
    case 'allocated':
    case 'releasing':
      return 'allocated';
    case 'error':
      return 'error';
    case 'deleting':
    case 'deleted':
      return 'finished';
  }
}

export interface InstanceView {
  id: number;
  url: string;
  dockerId: string | null;
  packetTracer: string | null;
  vnc: string | null;
  createdAt: Date;
  deletedAt: Date | null;
  status: string;
  state: InstanceState;
  stateReason: string;
  stateChangedAt: Date;
  host: string;
  ports: Record<string, number>;
  hot: boolean;
  loadedFile: string | null;
  restartCount: number;
  allocationCount: number;
  readyAt: Date | null;
}

export function presentInstance(config: AppConfig, base: string, instance: Instance): InstanceView {
  const host = config.docker.hosts.find((candidate) => candidate.name === instance.host);
  const address = (portName: string): string | null => {
    const port = instance.ports?.[portName];
    return host && port !== undefined && instance.state !== 'deleted' ? `${host.publicAddress}:${port}` : null;
  };
  const [mainPort, secondPort] = Object.keys(config.workload.ports);
  return {
    id: instance.id,
    url: `${base}/instances/${instance.id}`,
    dockerId: instance.dockerId,
    packetTracer: address(mainPort),
    vnc: address('vnc' in config.workload.ports ? 'vnc' : (secondPort ?? '')),
    createdAt: instance.createdAt,
    deletedAt: instance.deletedAt,
    status: legacyStatus(instance.state),
    state: instance.state,
    stateReason: instance.stateReason,
    stateChangedAt: instance.stateChangedAt,
    host: instance.host,
    ports: instance.ports,
    hot: instance.hot,
    loadedFile: instance.loadedFile,
    restartCount: instance.restartCount,
    allocationCount: instance.allocationCount,
    readyAt: instance.readyAt,
  };
}
