import { Injectable, Logger } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { AllocationStore } from '../allocations/allocation.store';
import { AppConfig } from '../config/app-config';
import { ContainerDriver, ContainerDriverError, ContainerInfo, INSTANCE_LABEL, OWNER_LABEL } from '../container-driver/container-driver';
import { HostUsageService } from '../instances/host-usage.service';
import { InstanceLifecycleService } from '../instances/instance-lifecycle.service';
import { Instance } from '../instances/instance.entity';
import { InstanceStore } from '../instances/instance.store';
import { PoolService } from '../instances/pool.service';
import { STALL_WINDOW_MS } from '../queues/queue.constants';
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
    private readonly lifecycle: InstanceLifecycleService,
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
          const deleted = await this.ifUnchanged(instance, (info) => info === null, async (manager) => {
            await this.endHolder(manager, instance.id, 'its container vanished');
            return this.store.markDeleted(instance.id, [instance.state, 'releasing'], 'container vanished', manager);
          });
          if (deleted) repair(`${log}: container vanished, marked deleted`);
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
              const how = 'its container was found paused';
              const count = await this.ifUnchanged(instance, (info) => info?.paused === true, async (manager) => {
                // A pending holder's job may only be stalled (run again, it unpauses the instance): it
                // is treated as lost only once Bull's stall window has passed.
                const released = await this.endHolder(manager, instance.id, how, age <= STALL_WINDOW_MS);
                if (released === 'spared') return null;
                // Ending an active holder moved the instance to releasing; a pending one leaves it allocated.
                return released ?? (await this.allocations.releaseIfUnheld(instance.id, how, manager));
              });
              if (count !== null) {
                repair(`${log}: allocated but paused, allocation ended`);
                await this.enqueue(() => this.queues.deallocate({ instanceId: instance.id }, count));
              }
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
            if (age > this.config.monitor.transitionTimeoutMs) {
              // Its job is lost or wedged (e.g. the worker died mid-delete): the monitor deletes it itself.
              if (await this.lifecycle.delete(instance.id)) repair(`${log}: stuck in deleting for ${Math.round(age / 1000)} s, deleted`);
            } else if (age > REQUEUE_AFTER_MS) {
              await this.enqueue(() => this.queues.delete({ instanceId: instance.id }));
            }
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
    const moved = await this.ifUnchanged(instance, (info) => info !== null && !info.running && !info.paused, async (manager) => {
      await this.endHolder(manager, instance.id, how);
      return this.store.transition(
        instance.id,
        [instance.state, 'releasing'],
        'error',
        how,
        // A clean exit is restarted at once; a crash waits for its backoff.
        { nextRestartAt: container.exitCode === 0 ? null : this.backoffFrom(instance.restartCount) },
        manager,
      );
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

  /**
   * Runs a repair of one instance only while its row is still as this pass read it (same state,
   * changed at the same time), under its row lock, and only if its container, inspected again, still
   * shows the fault (`fault` gets null for a container that is gone): acting on a stale snapshot could
   * end an allocation that took the instance since. Null when skipped.
   */
  private async ifUnchanged<T>(
    instance: Instance,
    fault: (info: ContainerInfo | null) => boolean,
    repair: (manager: EntityManager) => Promise<T>,
  ): Promise<T | null> {
    return this.dataSource.transaction(async (manager) => {
      const [row] = (await manager.query(
        `SELECT "id" FROM "instance" WHERE "id" = $1 AND "state" = $2 AND date_trunc('milliseconds', "state_changed_at") = $3
         FOR UPDATE SKIP LOCKED`,
        [instance.id, instance.state, instance.stateChangedAt],
      )) as { id: number }[];
      if (!row) return null;
      const info = await this.driver.inspect(instance.host, instance.dockerId ?? '').catch((error: unknown) => {
        if (error instanceof ContainerDriverError && error.notFound) return null;
        throw error;
      });
      return fault(info) ? repair(manager) : null;
    });
  }

  /**
   * Ends the open allocation holding the instance, if any, in the caller's transaction, which holds
   * the instance's row lock; returns the allocation count of the instance when that moved it to
   * releasing (an active holder's), else null. With `sparePending` a pending holder is left alone
   * ('spared'). The holder's row is taken without waiting (the API locks allocation then instance;
   * waiting here could deadlock): if it is busy, the repair fails and the next pass tries again.
   */
  private async endHolder(manager: EntityManager, instanceId: number, reason: string, sparePending = false): Promise<number | null | 'spared'> {
    const [holder] = (await manager.query(
      `SELECT "id", "state" FROM "allocation" WHERE "instance_id" = $1 AND "holds_instance_state" IS NOT NULL FOR UPDATE NOWAIT`,
      [instanceId],
    )) as { id: number; state: string }[];
    if (!holder) return null;
    if (sparePending && holder.state === 'pending') return 'spared';
    const { releaseInstance } = await this.allocations.close(holder.id, 'ended', `ended by the monitor: ${reason}`, manager);
    this.logger.warn(`allocation ${holder.id}: ended, ${reason}`);
    return releaseInstance?.allocationCount ?? null;
  }

  private async reconcileAllocations(repair: (text: string) => void): Promise<void> {
    const pending = (await this.dataSource.query(
      `SELECT "id", extract(epoch FROM now() - "created_at") * 1000 AS "age" FROM "allocation" WHERE "state" = 'pending'`,
    )) as { id: number; age: number }[];
    // A pending allocation's job may only be stalled (its worker died): Bull runs it again within its
    // stall window, so the allocation is failed only once that has passed too.
    const lostAfterMs = this.config.allocation.timeoutMs + Math.max(this.config.monitor.intervalMs, STALL_WINDOW_MS);
    for (const row of pending) {
      if (row.age > lostAfterMs) {
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
