import { parseAllowedHost } from '../files/file-policy';
import { ConfigError, Env, EnvReader } from './env-reader';

export type Role = 'api' | 'worker' | 'all';
export type NetworkMode = 'host' | 'bridge';
export type PlacementPolicy = 'pack' | 'spread';

export interface DockerHostConfig {
  /** Short name stored on every instance row. */
  name: string;
  /** unix:///var/run/docker.sock, tcp://host:2375 or http(s)://host:port */
  url: string;
  /** Address clients are given to reach the app ("packetTracer": "address:port"). */
  publicAddress: string;
  /** Address workers use to probe the app. */
  probeAddress: string;
}

/** How the service talks to the app inside a container: a line over TCP, an HTTP GET or a command run with exec. */
export type Action =
  | { kind: 'none' }
  | { kind: 'tcp'; port: string }
  | { kind: 'line'; port: string; send: string; expect: string }
  | { kind: 'http'; port: string; path: string }
  | { kind: 'exec'; command: string[] };

export interface ProbeConfig {
  action: Action;
  timeoutMs: number;
  retries: number;
  intervalMs: number;
  maxIntervalMs: number;
}

export interface WorkloadProfile {
  image: string;
  /** Named container ports, e.g. { ipc: 39000, vnc: 5900 }. The first is the app's main port. */
  ports: Record<string, number>;
  /** Environment variables that tell the app which port to use for each named port (host networking). */
  portEnv: Record<string, string>;
  env: string[];
  command: string[] | undefined;
  memoryMb: number;
  cpus: number;
  pidsLimit: number;
  readOnlyRootfs: boolean;
  tmpfs: string[];
  /** A named volume or host path mounted read-only with the app's installation ("name:/path"). */
  dataVolume: string | undefined;
  probe: ProbeConfig;
  /** Brings the app back to a clean state on allocation and release; {file} is replaced by the file path. */
  load: Action;
  reset: Action;
  /** File loaded when an allocation names none (a path inside the container), or undefined to use the reset action. */
  defaultFile: string | undefined;
}

export interface LimitsConfig {
  maxInstances: number;
  maxHostMemoryPercent: number;
  maxHostCpuPercent: number;
  portRange: [number, number];
}

export interface PoolConfig {
  minIdle: number;
  hotSpares: number;
}

export interface AllocationConfig {
  timeoutMs: number;
  defaultLeaseSeconds: number;
  maxLeaseSeconds: number;
  retryAfterSeconds: number;
}

export interface MonitorConfig {
  enabled: boolean;
  intervalMs: number;
  transitionTimeoutMs: number;
  restartLimit: number;
  restartBackoffMs: number;
  leaderLeaseMs: number;
}

export interface FilesConfig {
  cacheDir: string;
  mountPath: string;
  allowedHosts: string[];
  maxBytes: number;
  timeoutMs: number;
}

export class AppConfig {
  role!: Role;
  http!: { host: string; port: number; trustProxy: boolean };
  databaseUrl!: string;
  redisUrl!: string;
  queuePrefix!: string;
  docker!: { hosts: DockerHostConfig[]; timeoutMs: number; networkMode: NetworkMode; placement: PlacementPolicy };
  instanceNamePrefix!: string;
  workload!: WorkloadProfile;
  limits!: LimitsConfig;
  pool!: PoolConfig;
  allocation!: AllocationConfig;
  monitor!: MonitorConfig;
  files!: FilesConfig;
  workerConcurrency!: { high: number; normal: number };
  /** ROLE=all: run this process's own hand-outs and releases in-process while a slot is free. */
  localHandoff!: boolean;
  logLevel!: 'error' | 'warn' | 'log' | 'debug' | 'verbose';
}

function parseCommand(name: string, value: string): string[] {
  const trimmed = value.trim();
  if (trimmed.startsWith('[')) {
    try {
      const parsed: unknown = JSON.parse(trimmed);
      if (Array.isArray(parsed) && parsed.length > 0 && parsed.every((part) => typeof part === 'string')) {
        return parsed as string[];
      }
    } catch {
      // reported below
    }
    throw new ConfigError(name, 'a command as words or a JSON array of strings', value);
  }
  const words = trimmed.split(/\s+/).filter(Boolean);
  if (words.length === 0) throw new ConfigError(name, 'a non-empty command', value);
  return words;
}

/**
 * An action spec: "none", "tcp[:port]", "line[:port]:SEND=>EXPECT", "http[:port]:/path" or "exec:COMMAND".
 * The port is a name from WORKLOAD_PORTS (the first one by default).
 */
export function parseAction(name: string, value: string, ports: Record<string, number>): Action {
  const expected =
    'none, tcp[:PORTNAME], line[:PORTNAME]:SEND=>EXPECT, http[:PORTNAME]:/PATH or exec:COMMAND (PORTNAME from WORKLOAD_PORTS)';
  const mainPort = Object.keys(ports)[0];
  const portOf = (candidate: string | undefined): string => {
    if (candidate === undefined || candidate === '') return mainPort;
    if (!(candidate in ports)) throw new ConfigError(name, expected, value);
    return candidate;
  };
  if (value === 'none') return { kind: 'none' };
  if (value.startsWith('exec:')) return { kind: 'exec', command: parseCommand(name, value.slice(5)) };
  const tcp = /^tcp(?::([a-z][\w-]*))?$/i.exec(value);
  if (tcp) return { kind: 'tcp', port: portOf(tcp[1]) };
  const http = /^http(?::([a-z][\w-]*))?:(\/\S*)$/i.exec(value);
  if (http) return { kind: 'http', port: portOf(http[1]), path: http[2] };
  const line = /^line(?::([a-z][\w-]*))?:(.+?)=>(.+)$/i.exec(value);
  if (line) return { kind: 'line', port: portOf(line[1]), send: line[2], expect: line[3] };
  throw new ConfigError(name, expected, value);
}

function parseHosts(reader: EnvReader, env: Env): DockerHostConfig[] {
  const publicHost = reader.string('PUBLIC_HOST', '127.0.0.1');
  const list = reader.optionalString('DOCKER_HOSTS');
  const expected = 'a list like name=unix:///var/run/docker.sock@public.address,other=tcp://10.0.0.2:2375@lab2.example.org';
  if (list === undefined) {
    const dockerHost = env.DOCKER_HOST?.trim() || 'unix:///var/run/docker.sock';
    const url = reader.url('DOCKER_HOST', ['unix', 'tcp', 'http', 'https'], dockerHost);
    return [{ name: 'local', url, publicAddress: publicHost, probeAddress: reader.string('PROBE_HOST', publicHost) }];
  }
  const hosts: DockerHostConfig[] = [];
  for (const item of list.split(',').map((part) => part.trim()).filter(Boolean)) {
    const match = /^([a-z0-9][a-z0-9_-]{0,62})=([a-z]+:\/\/[^@]+?)(?:@([^@]+))?$/i.exec(item);
    if (!match || hosts.some((host) => host.name === match[1])) throw new ConfigError('DOCKER_HOSTS', expected, list);
    try {
      new URL(match[2]);
    } catch {
      throw new ConfigError('DOCKER_HOSTS', expected, list);
    }
    const address = match[3] ?? (match[2].startsWith('unix:') ? publicHost : new URL(match[2]).hostname);
    hosts.push({ name: match[1], url: match[2], publicAddress: address, probeAddress: address });
  }
  if (hosts.length === 0) throw new ConfigError('DOCKER_HOSTS', expected, list);
  return hosts;
}

/** Builds the validated configuration, or throws a ConfigError naming the first bad variable. */
export function loadConfig(env: Env = process.env): AppConfig {
  const r = new EnvReader(env);
  const config = new AppConfig();
  config.role = r.oneOf('ROLE', ['api', 'worker', 'all'] as const, 'all');
  config.http = {
    host: r.string('HTTP_HOST', '0.0.0.0'),
    port: r.int('HTTP_PORT', 8080, 1, 65535),
    trustProxy: r.bool('TRUST_PROXY', true),
  };
  config.databaseUrl = r.url('DATABASE_URL', ['postgres', 'postgresql']);
  config.redisUrl = r.url('REDIS_URL', ['redis', 'rediss'], 'redis://127.0.0.1:6379');
  config.queuePrefix = r.string('QUEUE_PREFIX', 'ptim');
  config.docker = {
    hosts: parseHosts(r, env),
    timeoutMs: r.int('DOCKER_TIMEOUT_MS', 15000, 100, 600000),
    networkMode: r.oneOf('NETWORK_MODE', ['host', 'bridge'] as const, 'bridge'),
    placement: r.oneOf('PLACEMENT', ['pack', 'spread'] as const, 'spread'),
  };
  config.instanceNamePrefix = r.string('INSTANCE_NAME_PREFIX', 'ptim');
  if (!/^[a-z0-9][a-z0-9_.-]*$/i.test(config.instanceNamePrefix)) {
    throw new ConfigError('INSTANCE_NAME_PREFIX', 'letters, digits, _ . -', config.instanceNamePrefix);
  }

  const ports = r.portMap('WORKLOAD_PORTS', 'ipc=39000,vnc=5900');
  const portEnv: Record<string, string> = {};
  for (const item of r.list('WORKLOAD_PORT_ENV', ['ipc=PT_PORT', 'vnc=VNC_PORT'])) {
    const match = /^([a-z][\w-]*)=([A-Z_][A-Z0-9_]*)$/i.exec(item);
    if (!match || !(match[1] in ports)) {
      throw new ConfigError('WORKLOAD_PORT_ENV', 'a list like ipc=PT_PORT,vnc=VNC_PORT naming ports of WORKLOAD_PORTS', item);
    }
    portEnv[match[1]] = match[2];
  }
  const command = r.optionalString('WORKLOAD_COMMAND');
  config.workload = {
    image: r.string('WORKLOAD_IMAGE', 'pt-instance-manager/ptdemo:latest'),
    ports,
    portEnv,
    env: r.list('WORKLOAD_ENV', []),
    command: command === undefined ? undefined : parseCommand('WORKLOAD_COMMAND', command),
    memoryMb: r.int('WORKLOAD_MEMORY_MB', 256, 6, 1048576),
    cpus: r.number('WORKLOAD_CPUS', 1, 0.01, 1024),
    pidsLimit: r.int('WORKLOAD_PIDS_LIMIT', 128, 1, 1000000),
    readOnlyRootfs: r.bool('WORKLOAD_READ_ONLY', true),
    tmpfs: r.list('WORKLOAD_TMPFS', ['/tmp']),
    dataVolume: r.optionalString('WORKLOAD_DATA_VOLUME'),
    probe: {
      action: parseAction('PROBE', r.string('PROBE', 'line:PING=>PONG'), ports),
      timeoutMs: r.int('PROBE_TIMEOUT_MS', 1000, 10, 600000),
      retries: r.int('PROBE_RETRIES', 40, 1, 100000),
      intervalMs: r.int('PROBE_INTERVAL_MS', 10, 1, 600000),
      maxIntervalMs: r.int('PROBE_MAX_INTERVAL_MS', 1000, 1, 600000),
    },
    load: parseAction('LOAD_ACTION', r.string('LOAD_ACTION', 'line:LOAD {file}=>OK'), ports),
    reset: parseAction('RESET_ACTION', r.string('RESET_ACTION', 'line:RESET=>OK'), ports),
    defaultFile: r.optionalString('DEFAULT_FILE'),
  };
  if (config.workload.dataVolume !== undefined && !/^[^:]+:\/\S*$/.test(config.workload.dataVolume)) {
    throw new ConfigError('WORKLOAD_DATA_VOLUME', 'NAME_OR_HOST_PATH:/container/path', config.workload.dataVolume);
  }
  for (const path of config.workload.tmpfs) {
    if (!path.startsWith('/')) throw new ConfigError('WORKLOAD_TMPFS', 'absolute container paths', path);
  }

  config.limits = {
    maxInstances: r.int('MAX_INSTANCES', 20, 0, 100000),
    maxHostMemoryPercent: r.number('MAX_HOST_MEMORY_PERCENT', 90, 1, 100),
    maxHostCpuPercent: r.number('MAX_HOST_CPU_PERCENT', 95, 1, 100),
    portRange: r.range('PORT_RANGE', '40000-40999', 1, 65535),
  };
  config.pool = {
    minIdle: r.int('POOL_MIN_IDLE', 0, 0, 100000),
    hotSpares: r.int('POOL_HOT_SPARES', 0, 0, 100000),
  };
  config.allocation = {
    timeoutMs: r.int('ALLOCATION_TIMEOUT_MS', 30000, 100, 3600000),
    defaultLeaseSeconds: r.int('LEASE_DEFAULT_SECONDS', 4 * 3600, 1, 30 * 86400),
    maxLeaseSeconds: r.int('LEASE_MAX_SECONDS', 24 * 3600, 1, 365 * 86400),
    retryAfterSeconds: r.int('RETRY_AFTER_SECONDS', 5, 1, 3600),
  };
  if (config.allocation.defaultLeaseSeconds > config.allocation.maxLeaseSeconds) {
    throw new ConfigError('LEASE_DEFAULT_SECONDS', `at most LEASE_MAX_SECONDS (${config.allocation.maxLeaseSeconds})`,
      String(config.allocation.defaultLeaseSeconds));
  }
  config.monitor = {
    enabled: r.bool('MONITOR_ENABLED', true),
    intervalMs: r.int('MONITOR_INTERVAL_MS', 5000, 100, 3600000),
    transitionTimeoutMs: r.int('TRANSITION_TIMEOUT_MS', 60000, 1000, 3600000),
    restartLimit: r.int('RESTART_LIMIT', 3, 0, 1000),
    restartBackoffMs: r.int('RESTART_BACKOFF_MS', 1000, 0, 3600000),
    leaderLeaseMs: r.int('MONITOR_LEADER_LEASE_MS', 15000, 1000, 3600000),
  };
  config.files = {
    cacheDir: r.string('FILES_CACHE_DIR', '/var/cache/pt-instance-manager/files'),
    mountPath: r.string('FILES_MOUNT_PATH', '/files'),
    allowedHosts: r.list('FILES_ALLOWED_HOSTS', []),
    maxBytes: r.int('FILES_MAX_BYTES', 50 * 1024 * 1024, 1, 10 * 1024 * 1024 * 1024),
    timeoutMs: r.int('FILES_TIMEOUT_MS', 15000, 10, 600000),
  };
  for (const entry of config.files.allowedHosts) {
    if (parseAllowedHost(entry) === null) {
      throw new ConfigError('FILES_ALLOWED_HOSTS', 'a list of host[:port] entries like files.example.org,10.0.0.5:8080', entry);
    }
  }
  if (!config.files.mountPath.startsWith('/')) {
    throw new ConfigError('FILES_MOUNT_PATH', 'an absolute container path', config.files.mountPath);
  }
  config.workerConcurrency = {
    high: r.int('HIGH_QUEUE_CONCURRENCY', 16, 1, 1000),
    normal: r.int('NORMAL_QUEUE_CONCURRENCY', 8, 1, 1000),
  };
  config.localHandoff = r.bool('LOCAL_HANDOFF', true);
  config.logLevel = r.oneOf('LOG_LEVEL', ['error', 'warn', 'log', 'debug', 'verbose'] as const, 'log');
  return config;
}
