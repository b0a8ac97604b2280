/** What the rest of the service knows about containers; only the driver module talks to Docker. */

/** Marks a container as ours; its value names the deployment (INSTANCE_NAME_PREFIX), so deployments sharing an engine leave each other alone. */
export const OWNER_LABEL = 'pt-instance-manager.owner';
export const INSTANCE_LABEL = 'pt-instance-manager.instance';

export interface ContainerSpec {
  name: string;
  image: string;
  env: string[];
  command?: string[];
  labels: Record<string, string>;
  networkMode: 'host' | 'bridge';
  /** container port -> host port, published on the host in bridge mode. */
  publish: Record<number, number>;
  memoryBytes: number;
  nanoCpus: number;
  pidsLimit: number;
  readOnlyRootfs: boolean;
  tmpfs: string[];
  /** "source:/target" mounts, all read-only. */
  readOnlyMounts: string[];
}

export interface ContainerInfo {
  id: string;
  name: string;
  labels: Record<string, string>;
  /** Docker's state: created, running, paused, restarting, removing, exited, dead */
  status: string;
  running: boolean;
  paused: boolean;
  exitCode: number | null;
  oomKilled: boolean;
}

export interface ExecResult {
  exitCode: number;
  output: string;
}

export interface HostUsage {
  memoryTotalBytes: number;
  memoryUsedPercent: number;
  cpuCount: number;
  cpuUsedPercent: number;
  /** Where the figures came from: the host's /proc (local socket) or the engine's container stats. */
  source: 'proc' | 'engine';
}

export type EngineEvent = {
  host: string;
  action: string;
  containerId: string;
  labels: Record<string, string>;
  exitCode: number | null;
};

export interface EventSubscription {
  close(): void;
}

/** Thrown for any failed engine call; says which call and on which container. */
export class ContainerDriverError extends Error {
  constructor(
    message: string,
    readonly statusCode: number | undefined = undefined,
  ) {
    super(message);
    this.name = 'ContainerDriverError';
  }

  get notFound(): boolean {
    return this.statusCode === 404;
  }
}

/** The DI token and contract of the container driver. Every call has a timeout. */
export abstract class ContainerDriver {
  /** Names of the configured Docker hosts. */
  abstract hostNames(): string[];
  abstract ping(host: string): Promise<void>;
  abstract imageExists(host: string, image: string): Promise<boolean>;
  abstract create(host: string, spec: ContainerSpec): Promise<string>;
  abstract start(host: string, id: string): Promise<void>;
  abstract pause(host: string, id: string): Promise<void>;
  abstract unpause(host: string, id: string): Promise<void>;
  abstract restart(host: string, id: string): Promise<void>;
  abstract stop(host: string, id: string, graceSeconds?: number): Promise<void>;
  abstract kill(host: string, id: string): Promise<void>;
  /** Removes the container (forced); a container already gone is not an error. */
  abstract remove(host: string, id: string): Promise<void>;
  abstract inspect(host: string, id: string): Promise<ContainerInfo>;
  abstract exec(host: string, id: string, command: string[], timeoutMs: number): Promise<ExecResult>;
  /** Containers (running or not) carrying all the given labels. */
  abstract list(host: string, labels: Record<string, string>): Promise<ContainerInfo[]>;
  abstract usage(host: string): Promise<HostUsage>;
  /** Container events of containers with our owner label; onError is called when the stream breaks. */
  abstract events(host: string, onEvent: (event: EngineEvent) => void, onError: (error: Error) => void): Promise<EventSubscription>;
}
