import { Injectable, Logger } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AllocationStore } from '../allocations/allocation.store';
import { AppConfig } from '../config/app-config';
import { ContainerDriver, ContainerDriverError, ContainerInfo, INSTANCE_LABEL, OWNER_LABEL } from '../container-driver/container-driver';
import { HostUsageService } from '../instances/host-usage.service';
import { Instance } from '../instances/instance.entity';
import { InstanceStore } from '../instances/instance.store';
import { PoolService } from '../instances/pool.service';
import { QueueProducer } from '../queues/queue.producer';

/** A job lost with Redis is re-queued once its row has waited this long in a transitional state. */
const REQUEUE_AFTER_MS = 3000;

export interface MonitorReport {
  startedAt: string;
  durationMs: number;
  instances: number;
  containers: number;
  repairs: string[];
}

const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/**
 * One level-triggered reconciliation pass: compares the rows with what each engine reports (one
 * list call per host, by our label) and repairs both directions. Every repair is logged and, where
 * it changes a row, recorded in the history with its reason.
 */
@Injectable()
export class MonitorService {
  private readonly logger = new Logger(MonitorService.name);
  private running: Promise<MonitorReport> | null = null;

  constructor(
    private readonly config: AppConfig,
    private readonly dataSource: DataSource,
    private readonly driver: ContainerDriver,
    private readonly store: InstanceStore,
    private readonly allocations: AllocationStore,
    private readonly usage: HostUsageService,
    private readonly pool: PoolService,
    private readonly queues: QueueProducer,
  ) {}

  /** Runs a pass, or joins the one already running in this process. */
  pass(): Promise<MonitorReport> {
    if (!this.running) {
      this.running = this.runPass().finally(() => {
        this.running = null;
      });
    }
    return this.running;
  }

  private async runPass(): Promise<MonitorReport> {
    const started = Date.now();
    const repairs: string[] = [];
    const repair = (text: string) => {
      repairs.push(text);
      this.logger.log(`repair: ${text}`);
    };
    await this.usage.sampleAll();
    await this.expireLeases(repair);
    let containerCount = 0;
    let instanceCount = 0;
    for (const host of this.driver.hostNames()) {
      // Rows first, then containers: a container created after the listing cannot look vanished.
      const instances = await this.dataSource
        .getRepository(Instance)
        .createQueryBuilder('instance')
        .where('instance.host = :host AND instance.state <> :deleted', { host, deleted: 'deleted' })
        .getMany();
      let containers: ContainerInfo[];
      try {
        containers = await this.driver.list(host, { [OWNER_LABEL]: this.config.instanceNamePrefix });
      } catch (error) {
        this.logger.warn(`host ${host} unreachable, skipped: ${message(error)}`);
        continue;
      }
      containerCount += containers.length;
      instanceCount += instances.length;
      await this.reconcileHost(host, instances, containers, repair);
    }
    await this.reconcileAllocations(repair);
    try {
      const { created, warmed } = await this.pool.replenish();
      if (created) repair(`pool below minimum: creating ${created} instance(s)`);
      if (warmed) repair(`unpaused ${warmed} hot spare(s)`);
    } catch (error) {
      this.logger.warn(`pool top-up failed: ${message(error)}`);
    }
    return {
      startedAt: new Date(started).toISOString(),
      durationMs: Date.now() - started,
      instances: instanceCount,
      containers: containerCount,
      repairs,
    };
  }

  private async expireLeases(repair: (text: string) => void): Promise<void> {
    for (const id of await this.allocations.dueForExpiry()) {
      const { closed, releaseInstance } = await this.allocations.close(id, 'expired', 'lease expired');
      if (!closed) continue;
      repair(`allocation ${id}: lease expired`);
      if (releaseInstance) await this.enqueue(() => this.queues.deallocate({ instanceId: releaseInstance.id }, releaseInstance.allocationCount));
    }
  }

  private async reconcileHost(
    host: string,
    instances: Instance[],
    containers: ContainerInfo[],
    repair: (text: string) => void,
  ): Promise<void> {
    const byId = new Map(containers.map((container) => [container.id, container]));
    // Containers labelled as ours that no live row owns: remove them (after re-reading the row,
    // since an instance reserved after our read may own a container created since).
    for (const container of containers) {
      if (instances.some((instance) => instance.dockerId === container.id)) continue;
      const owner = Number(container.labels[INSTANCE_LABEL]);
      const row = Number.isInteger(owner) && owner > 0 ? await this.store.find(owner) : null;
      if (row && row.state !== 'deleted' && (row.dockerId === null || row.dockerId === container.id)) continue;
      await this.driver.remove(host, container.id).catch((error: unknown) => this.logger.warn(`remove stray ${container.id}: ${message(error)}`));
      repair(`removed container ${container.id.slice(0, 12)} (${container.name}) that no instance owns`);
    }
    const now = Date.now();
    for (const instance of instances) {
      const log = `instance ${instance.id}`;
      const age = now - instance.stateChangedAt.getTime();
      const container = instance.dockerId ? byId.get(instance.dockerId) : undefined;
      try {
        if (instance.dockerId && !container && instance.state !== 'creating' && (await this.vanished(host, instance.dockerId))) {
          await this.endHolder(instance.id, 'its container vanished');
          if (await this.store.markDeleted(instance.id, [instance.state], 'container vanished')) {
            repair(`${log}: container vanished, marked deleted`);
          }
          continue;
        }
        switch (instance.state) {
          case 'creating':
            if (age > this.config.monitor.transitionTimeoutMs) {
              if (await this.store.transition(instance.id, ['creating'], 'error', `stuck in creating for ${Math.round(age / 1000)} s`)) {
                repair(`${log}: stuck in creating, now error`);
              }
            } else if (age > REQUEUE_AFTER_MS) {
              await this.enqueue(() => this.queues.create({ instanceId: instance.id }));
            }
            break;
          case 'starting':
            if (container && !container.running && !container.paused) {
              await this.containerDown(instance, container, repair);
            } else if (age > this.config.monitor.transitionTimeoutMs) {
              if (await this.store.transition(instance.id, ['starting'], 'error', `stuck in starting for ${Math.round(age / 1000)} s`)) {
                repair(`${log}: stuck in starting, now error`);
              }
            } else if (age > REQUEUE_AFTER_MS) {
              await this.enqueue(() => this.queues.waitReady({ instanceId: instance.id }, instance.restartCount));
            }
            break;
          case 'idle':
            if (!container) break;
            if (!container.running && !container.paused) {
              await this.containerDown(instance, container, repair);
            } else if (container.running && !instance.hot) {
              if (await this.pauseIfStillIdle(instance.id)) repair(`${log}: idle but running, paused again`);
            } else if (container.paused && instance.hot) {
              await this.dataSource.query(`UPDATE "instance" SET "hot" = false WHERE "id" = $1 AND "state" = 'idle'`, [instance.id]);
              repair(`${log}: hot spare found paused, no longer counted hot`);
            }
            break;
          case 'allocated':
            if (!container) break;
            if (!container.running && !container.paused) {
              await this.containerDown(instance, container, repair);
            } else if (container.paused && age > REQUEUE_AFTER_MS) {
              const released = await this.endHolder(instance.id, 'its container was found paused');
              if (released) repair(`${log}: allocated but paused, allocation ended`);
            } else if (age > REQUEUE_AFTER_MS) {
              const count = await this.allocations.releaseIfUnheld(instance.id, 'no allocation holds it');
              if (count !== null) {
                repair(`${log}: allocated without an allocation, released`);
                await this.enqueue(() => this.queues.deallocate({ instanceId: instance.id }, count));
              }
            }
            break;
          case 'releasing':
            if (container && !container.running && !container.paused) {
              await this.containerDown(instance, container, repair);
            } else if (age > this.config.monitor.transitionTimeoutMs) {
              if (await this.store.transition(instance.id, ['releasing'], 'error', `stuck in releasing for ${Math.round(age / 1000)} s`)) {
                repair(`${log}: stuck in releasing, now error`);
              }
            } else if (age > REQUEUE_AFTER_MS) {
              await this.enqueue(() => this.queues.deallocate({ instanceId: instance.id }, instance.allocationCount));
            }
            break;
          case 'error':
            await this.handleError(instance, repair);
            break;
          case 'deleting':
            if (age > REQUEUE_AFTER_MS) await this.enqueue(() => this.queues.delete({ instanceId: instance.id }));
            break;
          case 'deleted':
            break;
        }
      } catch (error) {
        this.logger.warn(`${log}: repair failed: ${message(error)}`);
      }
    }
  }

  private async vanished(host: string, dockerId: string): Promise<boolean> {
    try {
      await this.driver.inspect(host, dockerId);
      return false;
    } catch (error) {
      return error instanceof ContainerDriverError && error.notFound;
    }
  }

  /** Pauses an idle, not-hot instance's container under its row lock, so a concurrent claim cannot be paused by mistake. */
  private async pauseIfStillIdle(instanceId: number): Promise<boolean> {
    return this.dataSource.transaction(async (manager) => {
      const [row] = (await manager.query(
        `SELECT "host", "docker_id" FROM "instance" WHERE "id" = $1 AND "state" = 'idle' AND NOT "hot" FOR UPDATE SKIP LOCKED`,
        [instanceId],
      )) as { host: string; docker_id: string }[];
      if (!row) return false;
      const info = await this.driver.inspect(row.host, row.docker_id);
      if (!info.running) return false;
      await this.driver.pause(row.host, row.docker_id);
      return true;
    });
  }

  /** The container stopped: end any allocation on it and put the instance in error (restarted below). */
  private async containerDown(instance: Instance, container: ContainerInfo, repair: (text: string) => void): Promise<void> {
    const how = `container ${container.status}${container.exitCode !== null ? ` with exit code ${container.exitCode}` : ''}`;
    await this.endHolder(instance.id, how);
    await this.allocations.releaseIfUnheld(instance.id, how);
    const moved = await this.store.transition(instance.id, [instance.state === 'allocated' ? 'releasing' : instance.state], 'error', how, {
      // A clean exit is restarted at once; a crash waits for its backoff.
      nextRestartAt: container.exitCode === 0 ? null : this.backoffFrom(instance.restartCount),
    });
    if (moved) repair(`instance ${instance.id}: ${how}, now error`);
  }

  private backoffFrom(restartCount: number): Date {
    return new Date(Date.now() + this.config.monitor.restartBackoffMs * 2 ** Math.max(0, restartCount));
  }

  private async handleError(instance: Instance, repair: (text: string) => void): Promise<void> {
    if (instance.restartCount >= this.config.monitor.restartLimit) {
      if (await this.store.transition(instance.id, ['error'], 'deleting', `gave up after ${instance.restartCount} restart(s): ${instance.stateReason}`)) {
        repair(`instance ${instance.id}: restart budget spent, deleting`);
        await this.enqueue(() => this.queues.delete({ instanceId: instance.id }));
      }
      return;
    }
    if (instance.nextRestartAt === null || instance.nextRestartAt.getTime() <= Date.now()) {
      await this.enqueue(() => this.queues.restart({ instanceId: instance.id }, instance.restartCount));
    }
  }

  /** Ends the open allocation holding the instance (if any) and moves the instance to releasing. */
  private async endHolder(instanceId: number, reason: string): Promise<boolean> {
    const [holder] = (await this.dataSource.query(
      `SELECT "id" FROM "allocation" WHERE "instance_id" = $1 AND "holds_instance_state" IS NOT NULL`,
      [instanceId],
    )) as { id: number }[];
    if (!holder) return false;
    const { releaseInstance } = await this.allocations.close(holder.id, 'ended', `ended by the monitor: ${reason}`);
    if (releaseInstance) await this.enqueue(() => this.queues.deallocate({ instanceId }, releaseInstance.allocationCount));
    this.logger.warn(`allocation ${holder.id}: ended, ${reason}`);
    return true;
  }

  private async reconcileAllocations(repair: (text: string) => void): Promise<void> {
    const pending = (await this.dataSource.query(
      `SELECT "id", extract(epoch FROM now() - "created_at") * 1000 AS "age" FROM "allocation" WHERE "state" = 'pending'`,
    )) as { id: number; age: number }[];
    for (const row of pending) {
      if (row.age > this.config.allocation.timeoutMs + this.config.monitor.intervalMs) {
        if (await this.allocations.fail(row.id, 'timeout', `still pending after ${Math.round(row.age / 1000)} s`)) {
          repair(`allocation ${row.id}: stuck in pending, now failed`);
        }
      } else if (row.age > REQUEUE_AFTER_MS) {
        await this.enqueue(() => this.queues.allocate({ allocationId: row.id }));
      }
    }
  }

  /** Queues follow-up work; while Redis is down the next pass tries again. */
  private async enqueue(add: () => Promise<unknown>): Promise<void> {
    try {
      await add();
    } catch (error) {
      this.logger.warn(`follow-up job not queued (next pass retries): ${message(error)}`);
    }
  }
}
