import { Injectable, Logger, OnModuleDestroy } from '@nestjs/common';
import Docker from 'dockerode';
import { readFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { PassThrough } from 'node:stream';
import { AppConfig, DockerHostConfig } from '../config/app-config';
import {
  ContainerDriver,
  ContainerDriverError,
  ContainerInfo,
  ContainerSpec,
  EngineEvent,
  EventSubscription,
  ExecResult,
  HostUsage,
  OWNER_LABEL,
} from './container-driver';

interface DockerApiError {
  statusCode?: number;
  message?: string;
  json?: { message?: string } | null;
}

interface CpuSample {
  at: number;
  busy: number;
  total: number;
}

interface ContainerStats {
  memory_stats?: { usage?: number };
  cpu_stats?: { cpu_usage?: { total_usage?: number } };
}

function connectionOptions(host: DockerHostConfig, timeoutMs?: number): Docker.DockerOptions {
  const url = new URL(host.url);
  const options: Docker.DockerOptions = url.protocol === 'unix:'
    ? { socketPath: url.pathname }
    : {
        host: url.hostname,
        port: url.port ? Number(url.port) : url.protocol === 'https:' ? 2376 : 2375,
        protocol: url.protocol === 'https:' ? 'https' : 'http',
      };
  if (timeoutMs !== undefined) options.timeout = timeoutMs;
  return options;
}

function describe(error: unknown): { message: string; statusCode: number | undefined } {
  const apiError = error as DockerApiError;
  const message = apiError?.json?.message ?? apiError?.message ?? String(error);
  return { message: message.trim(), statusCode: apiError?.statusCode };
}

/** The container driver over the Docker Engine API (dockerode), one client per configured host. */
@Injectable()
export class DockerContainerDriver extends ContainerDriver implements OnModuleDestroy {
  private readonly logger = new Logger(DockerContainerDriver.name);
  private readonly clients = new Map<string, Docker>();
  private readonly hosts = new Map<string, DockerHostConfig>();
  private readonly cpuSamples = new Map<string, CpuSample>();
  private readonly lastUsage = new Map<string, HostUsage>();
  private readonly subscriptions = new Set<EventSubscription>();
  private readonly timeoutMs: number;
  /** Value of the owner label on this deployment's containers. */
  private readonly owner: string;

  constructor(config: AppConfig) {
    super();
    this.timeoutMs = config.docker.timeoutMs;
    this.owner = config.instanceNamePrefix;
    for (const host of config.docker.hosts) {
      this.hosts.set(host.name, host);
      this.clients.set(host.name, new Docker(connectionOptions(host, this.timeoutMs)));
    }
  }

  onModuleDestroy(): void {
    for (const subscription of this.subscriptions) subscription.close();
  }

  hostNames(): string[] {
    return [...this.hosts.keys()];
  }

  private client(host: string): Docker {
    const client = this.clients.get(host);
    if (!client) throw new ContainerDriverError(`unknown Docker host "${host}"`);
    return client;
  }

  /** Runs one engine call with a deadline and turns its failure into a ContainerDriverError naming the call. */
  private async call<T>(what: string, run: () => Promise<T>, timeoutMs = this.timeoutMs): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        run(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new ContainerDriverError(`${what}: timed out after ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (error) {
      if (error instanceof ContainerDriverError) throw error;
      const { message, statusCode } = describe(error);
      throw new ContainerDriverError(`${what}: ${message}`, statusCode);
    } finally {
      clearTimeout(timer);
    }
  }

  async ping(host: string): Promise<void> {
    await this.call(`ping ${host}`, () => this.client(host).ping(), Math.min(this.timeoutMs, 3000));
  }

  async imageExists(host: string, image: string): Promise<boolean> {
    try {
      await this.call(`inspect image ${image}`, () => this.client(host).getImage(image).inspect());
      return true;
    } catch (error) {
      if (error instanceof ContainerDriverError && error.notFound) return false;
      throw error;
    }
  }

  async create(host: string, spec: ContainerSpec): Promise<string> {
    const exposed: Record<string, object> = {};
    const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
    if (spec.networkMode === 'bridge') {
      for (const [containerPort, hostPort] of Object.entries(spec.publish)) {
        exposed[`${containerPort}/tcp`] = {};
        bindings[`${containerPort}/tcp`] = [{ HostIp: '', HostPort: String(hostPort) }];
      }
    }
    const tmpfs: Record<string, string> = {};
    for (const path of spec.tmpfs) tmpfs[path] = 'rw,noexec,nosuid,size=64m';
    const container = await this.call(`create ${spec.name}`, () =>
      this.client(host).createContainer({
        name: spec.name,
        Image: spec.image,
        Env: spec.env,
        Cmd: spec.command,
        Labels: spec.labels,
        ExposedPorts: exposed,
        HostConfig: {
          NetworkMode: spec.networkMode,
          PortBindings: bindings,
          Memory: spec.memoryBytes,
          MemorySwap: spec.memoryBytes,
          NanoCpus: spec.nanoCpus,
          PidsLimit: spec.pidsLimit,
          ReadonlyRootfs: spec.readOnlyRootfs,
          Tmpfs: tmpfs,
          Binds: spec.readOnlyMounts.map((mount) => `${mount}:ro`),
          CapDrop: ['ALL'],
          SecurityOpt: ['no-new-privileges'],
          Privileged: false,
          RestartPolicy: { Name: 'no' },
          Init: false,
          LogConfig: { Type: 'json-file', Config: { 'max-size': '1m', 'max-file': '1' } },
        },
      }),
    );
    return container.id;
  }

  async start(host: string, id: string): Promise<void> {
    try {
      await this.call(`start ${id.slice(0, 12)}`, () => this.client(host).getContainer(id).start());
    } catch (error) {
      // 304: already started (a job re-run after a crash started it the first time).
      if (error instanceof ContainerDriverError && error.statusCode === 304) return;
      throw error;
    }
  }

  async pause(host: string, id: string): Promise<void> {
    try {
      await this.call(`pause ${id.slice(0, 12)}`, () => this.client(host).getContainer(id).pause());
    } catch (error) {
      // 409 "already paused" is the state asked for; "not running" stays an error.
      if (error instanceof ContainerDriverError && /is already paused/i.test(error.message)) return;
      throw error;
    }
  }

  async unpause(host: string, id: string): Promise<void> {
    try {
      await this.call(`unpause ${id.slice(0, 12)}`, () => this.client(host).getContainer(id).unpause());
    } catch (error) {
      // "not paused" (409, or 500 from older engines) is the state asked for only if it runs: a stopped
      // container is not paused either, and that stays an error.
      if (error instanceof ContainerDriverError && /is not paused/i.test(error.message) && (await this.inspect(host, id)).running) return;
      throw error;
    }
  }

  async restart(host: string, id: string): Promise<void> {
    await this.call(`restart ${id.slice(0, 12)}`, () => this.client(host).getContainer(id).restart({ t: 2 }));
  }

  async stop(host: string, id: string, graceSeconds = 2): Promise<void> {
    try {
      await this.call(`stop ${id.slice(0, 12)}`, () => this.client(host).getContainer(id).stop({ t: graceSeconds }));
    } catch (error) {
      // 304: already stopped
      if (error instanceof ContainerDriverError && error.statusCode === 304) return;
      throw error;
    }
  }

  async kill(host: string, id: string): Promise<void> {
    await this.call(`kill ${id.slice(0, 12)}`, () => this.client(host).getContainer(id).kill());
  }

  async remove(host: string, id: string): Promise<void> {
    try {
      await this.call(`remove ${id.slice(0, 12)}`, () => this.client(host).getContainer(id).remove({ force: true, v: true }));
    } catch (error) {
      if (error instanceof ContainerDriverError && error.notFound) return;
      // 409 "removal already in progress" ends the same way.
      if (error instanceof ContainerDriverError && error.statusCode === 409 && /in progress/i.test(error.message)) return;
      throw error;
    }
  }

  async inspect(host: string, id: string): Promise<ContainerInfo> {
    const info = await this.call(`inspect ${id.slice(0, 12)}`, () => this.client(host).getContainer(id).inspect());
    return {
      id: info.Id,
      name: info.Name.replace(/^\//, ''),
      labels: info.Config.Labels ?? {},
      status: info.State.Status,
      running: info.State.Running && !info.State.Paused,
      paused: info.State.Paused,
      exitCode: info.State.Running ? null : info.State.ExitCode,
      oomKilled: info.State.OOMKilled,
    };
  }

  async exec(host: string, id: string, command: string[], timeoutMs: number): Promise<ExecResult> {
    const what = `exec ${command[0]} in ${id.slice(0, 12)}`;
    const client = this.client(host);
    return this.call(
      what,
      async () => {
        const exec = await client.getContainer(id).exec({ Cmd: command, AttachStdout: true, AttachStderr: true, Tty: false });
        const stream = await exec.start({ hijack: true, stdin: false });
        const chunks: Buffer[] = [];
        const sink = new PassThrough();
        sink.on('data', (chunk: Buffer) => chunks.push(chunk));
        client.modem.demuxStream(stream, sink, sink);
        await new Promise<void>((resolve, reject) => {
          stream.on('end', () => resolve());
          stream.on('close', () => resolve());
          stream.on('error', reject);
        });
        const result = await exec.inspect();
        return { exitCode: result.ExitCode ?? -1, output: Buffer.concat(chunks).toString('utf8') };
      },
      timeoutMs,
    );
  }

  async list(host: string, labels: Record<string, string>): Promise<ContainerInfo[]> {
    const filters = { label: Object.entries(labels).map(([key, value]) => `${key}=${value}`) };
    const containers = await this.call(`list containers on ${host}`, () =>
      this.client(host).listContainers({ all: true, filters }),
    );
    return containers.map((container) => {
      const exit = /Exited \((-?\d+)\)/.exec(container.Status);
      return {
        id: container.Id,
        name: (container.Names[0] ?? '').replace(/^\//, ''),
        labels: container.Labels ?? {},
        status: container.State,
        running: container.State === 'running',
        paused: container.State === 'paused',
        exitCode: exit ? Number(exit[1]) : null,
        oomKilled: false,
      };
    });
  }

  async usage(host: string): Promise<HostUsage> {
    const config = this.hosts.get(host);
    if (!config) throw new ContainerDriverError(`unknown Docker host "${host}"`);
    if (config.url.startsWith('unix:')) return this.procUsage(host);
    return this.engineUsage(host);
  }

  /** The engine runs on this machine: read the host's own figures. */
  private async procUsage(host: string): Promise<HostUsage> {
    const meminfo = await readFile('/proc/meminfo', 'utf8');
    const field = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
    const total = field('MemTotal');
    const available = field('MemAvailable');
    const previous = this.cpuSamples.get(host);
    const sample = await this.procCpuSample();
    if (previous && sample.at - previous.at < 50) {
      // Too short a window to mean anything: keep the last figure.
      const last = this.lastUsage.get(host);
      if (last) return { ...last, memoryTotalBytes: total, memoryUsedPercent: total > 0 ? ((total - available) / total) * 100 : 0 };
    }
    let from = previous;
    let to = sample;
    if (!from) {
      // First measurement: take a short window now.
      from = sample;
      await new Promise((resolve) => setTimeout(resolve, 100));
      to = await this.procCpuSample();
    }
    this.cpuSamples.set(host, to);
    const usage = this.usageFrom(total, available, from, to);
    this.lastUsage.set(host, usage);
    return usage;
  }

  private usageFrom(total: number, available: number, from: CpuSample, to: CpuSample): HostUsage {
    const totalDelta = to.total - from.total;
    const cpuUsedPercent = totalDelta > 0 ? ((to.busy - from.busy) / totalDelta) * 100 : 0;
    return {
      memoryTotalBytes: total,
      memoryUsedPercent: total > 0 ? ((total - available) / total) * 100 : 0,
      cpuCount: cpus().length,
      cpuUsedPercent: Math.max(0, Math.min(100, cpuUsedPercent)),
      source: 'proc',
    };
  }

  private async procCpuSample(): Promise<CpuSample> {
    const stat = await readFile('/proc/stat', 'utf8');
    const values = (/^cpu\s+(.*)$/m.exec(stat)?.[1] ?? '').trim().split(/\s+/).map(Number);
    const idle = (values[3] ?? 0) + (values[4] ?? 0);
    const total = values.reduce((sum, value) => sum + value, 0);
    return { at: Date.now(), busy: total - idle, total };
  }

  /** A remote engine: memory and CPU of our containers against the host's totals, from the engine itself. */
  private async engineUsage(host: string): Promise<HostUsage> {
    const client = this.client(host);
    const info = (await this.call(`info ${host}`, () => client.info())) as { MemTotal: number; NCPU: number };
    const ours = await this.list(host, { [OWNER_LABEL]: this.owner });
    let memory = 0;
    let cpuNanos = 0;
    for (const container of ours.filter((item) => item.running || item.paused)) {
      const stats = (await this.call(`stats ${container.id.slice(0, 12)}`, () =>
        client.getContainer(container.id).stats({ stream: false, 'one-shot': true } as { stream: false }),
      )) as ContainerStats;
      memory += stats.memory_stats?.usage ?? 0;
      cpuNanos += stats.cpu_stats?.cpu_usage?.total_usage ?? 0;
    }
    const now = Date.now();
    const previous = this.cpuSamples.get(host);
    this.cpuSamples.set(host, { at: now, busy: cpuNanos, total: 0 });
    const elapsedNanos = previous ? (now - previous.at) * 1e6 * info.NCPU : 0;
    const cpuUsedPercent = previous && elapsedNanos > 0 ? ((cpuNanos - previous.busy) / elapsedNanos) * 100 : 0;
    return {
      memoryTotalBytes: info.MemTotal,
      memoryUsedPercent: info.MemTotal > 0 ? (memory / info.MemTotal) * 100 : 0,
      cpuCount: info.NCPU,
      cpuUsedPercent: Math.max(0, Math.min(100, cpuUsedPercent)),
      source: 'engine',
    };
  }

  async events(
    host: string,
    onEvent: (event: EngineEvent) => void,
    onError: (error: Error) => void,
  ): Promise<EventSubscription> {
    const config = this.hosts.get(host);
    if (!config) throw new ContainerDriverError(`unknown Docker host "${host}"`);
    // A separate client without the per-request timeout: the stream stays open indefinitely.
    const client = new Docker(connectionOptions(config));
    const stream = (await this.call(`events ${host}`, () =>
      client.getEvents({ filters: { type: ['container'], label: [`${OWNER_LABEL}=${this.owner}`] } }),
    )) as NodeJS.ReadableStream & { destroy?: () => void };
    let buffered = '';
    let closed = false;
    const fail = (error: Error) => {
      if (closed) return;
      closed = true;
      onError(error);
    };
    stream.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        newline = buffered.indexOf('\n');
        if (!line) continue;
        try {
          const event = JSON.parse(line) as {
            Action?: string;
            Actor?: { ID?: string; Attributes?: Record<string, string> };
          };
          const attributes = event.Actor?.Attributes ?? {};
          onEvent({
            host,
            action: event.Action ?? '',
            containerId: event.Actor?.ID ?? '',
            labels: attributes,
            exitCode: attributes.exitCode !== undefined ? Number(attributes.exitCode) : null,
          });
        } catch (error) {
          this.logger.warn(`unreadable engine event on ${host}: ${String(error)}`);
        }
      }
    });
    stream.on('end', () => fail(new Error(`event stream of ${host} ended`)));
    stream.on('close', () => fail(new Error(`event stream of ${host} closed`)));
    stream.on('error', (error: Error) => fail(error));
    const subscription: EventSubscription = {
      close: () => {
        closed = true;
        this.subscriptions.delete(subscription);
        stream.destroy?.();
      },
    };
    this.subscriptions.add(subscription);
    return subscription;
  }
}
