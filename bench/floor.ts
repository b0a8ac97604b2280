import Docker from 'dockerode';
import { AppConfig } from '../src/config/app-config';
import { OWNER_LABEL } from '../src/container-driver/container-driver';
import { DockerContainerDriver } from '../src/container-driver/docker-container.driver';
import { containerSpec } from '../src/instances/container-spec';
import { askApp } from '../test/support/app-client';
import { sleep } from './service';

export interface FloorContainer {
  id: string;
  name: string;
  port: number;
}

/** Removes every container carrying this owner label, whatever run left it. */
export async function removeOwned(docker: Docker, owner: string): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: { label: [`${OWNER_LABEL}=${owner}`] } });
  await Promise.all(containers.map((c) => docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined)));
}

/**
 * The floor: the same containers (same image, same create options as the service's instances)
 * driven straight through dockerode and a bare socket, with nothing of the service in between.
 */
export class Floor {
  private readonly docker: Docker;
  private readonly driver: DockerContainerDriver;
  private nextPort: number;
  private serial = 0;

  constructor(
    private readonly config: AppConfig,
    portBase: number,
  ) {
    this.docker = new Docker(process.env.DOCKER_HOST ? undefined : { socketPath: '/var/run/docker.sock' });
    this.driver = new DockerContainerDriver(config);
    this.nextPort = portBase;
  }

  get owner(): string {
    return this.config.instanceNamePrefix;
  }

  /** Creates a container with the service's options (untimed wrapper: dockerode createContainer). */
  private async createContainer(): Promise<FloorContainer> {
    const port = this.nextPort;
    this.nextPort += 2;
    this.serial += 1;
    const name = `${this.owner}-${this.serial}-${process.pid}`;
    const spec = containerSpec(this.config, { id: this.serial, containerName: name, ports: { ipc: port, vnc: port + 1 } });
    const id = await this.driver.create(this.config.docker.hosts[0].name, spec);
    return { id, name, port };
  }

  /** Probes PING => PONG until it answers, retrying every 2 ms (the tightest a client could poll). */
  async probe(port: number, timeoutMs = 15000): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      try {
        if ((await askApp(`127.0.0.1:${port}`, 'PING', 1000)) === 'PONG') return;
      } catch (error) {
        if (performance.now() > deadline) throw error;
      }
      await sleep(2);
    }
  }

  /** Create + start + first successful probe, timed as one; the container is then removed (untimed). */
  async cold(): Promise<{ total: number; create: number; start: number; probe: number }> {
    const t0 = performance.now();
    const container = await this.createContainer();
    const t1 = performance.now();
    await this.docker.getContainer(container.id).start();
    const t2 = performance.now();
    await this.probe(container.port);
    const t3 = performance.now();
    await this.remove(container);
    return { total: t3 - t0, create: t1 - t0, start: t2 - t1, probe: t3 - t2 };
  }

  /** Containers started, answering and paused: the floor's pool. */
  async pool(count: number): Promise<FloorContainer[]> {
    const containers: FloorContainer[] = [];
    for (let i = 0; i < count; i += 1) {
      const container = await this.createContainer();
      await this.docker.getContainer(container.id).start();
      await this.probe(container.port);
      await this.docker.getContainer(container.id).pause();
      containers.push(container);
    }
    return containers;
  }

  async unpause(container: FloorContainer): Promise<number> {
    const t0 = performance.now();
    await this.docker.getContainer(container.id).unpause();
    return performance.now() - t0;
  }

  async pause(container: FloorContainer): Promise<number> {
    const t0 = performance.now();
    await this.docker.getContainer(container.id).pause();
    return performance.now() - t0;
  }

  /** The reset step: the same line the service sends (RESET_ACTION), answered OK. */
  async reset(container: FloorContainer): Promise<number> {
    const t0 = performance.now();
    const answer = await askApp(`127.0.0.1:${container.port}`, 'RESET', 5000);
    if (!answer.startsWith('OK')) throw new Error(`RESET answered ${answer}`);
    return performance.now() - t0;
  }

  async remove(container: FloorContainer): Promise<void> {
    await this.docker.getContainer(container.id).remove({ force: true });
  }

  /** Removes every floor container, whatever run left it. */
  removeAll(): Promise<void> {
    return removeOwned(this.docker, this.owner);
  }
}
