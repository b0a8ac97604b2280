import { Injectable } from '@nestjs/common';
import { request } from 'node:http';
import { connect } from 'node:net';
import { Action, AppConfig, DockerHostConfig } from '../config/app-config';
import { ContainerDriver } from '../container-driver/container-driver';

/** Where the app of one instance can be reached. */
export interface AppTarget {
  instanceId: number;
  host: string;
  dockerId: string;
  ports: Record<string, number>;
}

export class ActionFailedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ActionFailedError';
  }
}

/**
 * Talks to the app inside an instance: readiness probes, loading a file, resetting. An action is a
 * TCP connect, a line sent over the app's port, an HTTP GET, or a command run with exec (through
 * the container driver). Every call is bounded by a timeout.
 */
@Injectable()
export class WorkloadClient {
  private readonly hosts: Map<string, DockerHostConfig>;

  constructor(
    private readonly config: AppConfig,
    private readonly driver: ContainerDriver,
  ) {
    this.hosts = new Map(config.docker.hosts.map((host) => [host.name, host]));
  }

  /** One readiness try. Resolves when the app answered as expected. */
  probe(target: AppTarget, timeoutMs = this.config.workload.probe.timeoutMs): Promise<string> {
    return this.run(target, this.config.workload.probe.action, timeoutMs, undefined);
  }

  /**
   * prepare() then the readiness re-check. When the load/reset action already got an answer over
   * the same port the probe uses (line or http), that answer is the re-check and no second round
   * trip is made.
   */
  async prepareAndCheck(target: AppTarget, file: string | undefined, timeoutMs: number): Promise<string | null> {
    const loaded = await this.prepare(target, file, timeoutMs);
    const workload = this.config.workload;
    const ran = (file ?? workload.defaultFile) !== undefined && workload.load.kind !== 'none' ? workload.load : workload.reset;
    const probe = workload.probe.action;
    const answeredOnProbePort =
      (ran.kind === 'line' || ran.kind === 'http') && (probe.kind === 'line' || probe.kind === 'tcp' || probe.kind === 'http') && ran.port === probe.port;
    if (!answeredOnProbePort) await this.probe(target);
    return loaded;
  }

  /** Brings the app to a clean state with `file` loaded (or the profile's default / reset action). */
  async prepare(target: AppTarget, file: string | undefined, timeoutMs: number): Promise<string | null> {
    const workload = this.config.workload;
    const wanted = file ?? workload.defaultFile;
    if (wanted !== undefined && workload.load.kind !== 'none') {
      await this.run(target, workload.load, timeoutMs, wanted);
      return wanted;
    }
    if (workload.reset.kind !== 'none') {
      const answer = await this.run(target, workload.reset, timeoutMs, undefined);
      // A reset that reports what it loaded ("OK /files/default.pkt 12") tells us the file.
      const loaded = /^\S+\s+(\/\S+)/.exec(answer)?.[1];
      return loaded ?? null;
    }
    return null;
  }

  private address(target: AppTarget, portName: string): { host: string; port: number } {
    const host = this.hosts.get(target.host);
    const port = target.ports[portName];
    if (!host || port === undefined) {
      throw new ActionFailedError(`instance ${target.instanceId} has no ${portName} port on host ${target.host}`);
    }
    return { host: host.probeAddress, port };
  }

  async run(target: AppTarget, action: Action, timeoutMs: number, file: string | undefined): Promise<string> {
    const fill = (text: string): string => (file === undefined ? text : text.replaceAll('{file}', file));
    switch (action.kind) {
      case 'none':
        return '';
      case 'tcp': {
        const { host, port } = this.address(target, action.port);
        await this.tcpConnect(host, port, timeoutMs);
        return '';
      }
      case 'line': {
        const { host, port } = this.address(target, action.port);
        const answer = await this.sendLine(host, port, fill(action.send), timeoutMs);
        if (!answer.startsWith(fill(action.expect))) {
          throw new ActionFailedError(`"${fill(action.send)}" answered "${answer.slice(0, 200)}", expected "${fill(action.expect)}"`);
        }
        return answer;
      }
      case 'http': {
        const { host, port } = this.address(target, action.port);
        return this.httpGet(host, port, fill(action.path), timeoutMs);
      }
      case 'exec': {
        const command = action.command.map(fill);
        let result;
        try {
          result = await this.driver.exec(target.host, target.dockerId, command, timeoutMs);
        } catch (error) {
          throw new ActionFailedError(error instanceof Error ? error.message : String(error));
        }
        if (result.exitCode !== 0) {
          throw new ActionFailedError(`${command.join(' ')} exited with ${result.exitCode}: ${result.output.trim().slice(0, 200)}`);
        }
        return result.output.trim();
      }
    }
  }

  private tcpConnect(host: string, port: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new ActionFailedError(`no TCP connection to ${host}:${port} within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.destroy();
        resolve();
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(new ActionFailedError(`TCP ${host}:${port}: ${error.message}`));
      });
    });
  }

  private sendLine(host: string, port: number, line: string, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port });
      socket.setNoDelay(true);
      let buffered = '';
      let settled = false;
      const finish = (error: Error | null, answer?: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        if (error) reject(error);
        else resolve(answer ?? '');
      };
      const timer = setTimeout(
        () => finish(new ActionFailedError(`no answer to "${line}" from ${host}:${port} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      socket.once('connect', () => socket.write(`${line}\n`));
      socket.on('data', (chunk: Buffer) => {
        buffered += chunk.toString('utf8');
        const newline = buffered.indexOf('\n');
        if (newline >= 0) finish(null, buffered.slice(0, newline).replace(/\r$/, ''));
        else if (buffered.length > 65536) finish(new ActionFailedError(`answer from ${host}:${port} too long`));
      });
      socket.once('error', (error) => finish(new ActionFailedError(`${host}:${port}: ${error.message}`)));
      socket.once('close', () => finish(new ActionFailedError(`${host}:${port} closed the connection without an answer`)));
    });
  }

  private httpGet(host: string, port: number, path: string, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request({ host, port, path, method: 'GET', timeout: timeoutMs, agent: false }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          if (body.length < 65536) body += chunk;
        });
        response.on('end', () => {
          const status = response.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve(body);
          else reject(new ActionFailedError(`GET ${path} on ${host}:${port} answered ${status}`));
        });
      });
      req.on('timeout', () => req.destroy(new ActionFailedError(`GET ${path} on ${host}:${port}: no answer within ${timeoutMs} ms`)));
      req.on('error', (error) =>
        reject(error instanceof ActionFailedError ? error : new ActionFailedError(`GET ${path} on ${host}:${port}: ${error.message}`)),
      );
      req.end();
    });
  }
}
