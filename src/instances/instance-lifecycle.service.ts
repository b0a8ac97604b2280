import { Injectable, Logger } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { ContainerDriver, ContainerDriverError, INSTANCE_LABEL, OWNER_LABEL } from '../container-driver/container-driver';
import { QueueProducer } from '../queues/queue.producer';
import { WakeList } from '../common/wake-list';
import { containerSpec } from './container-spec';
import { HostUsageService } from './host-usage.service';
import { Instance } from './instance.entity';
import { InstanceStore } from './instance.store';
import { AppTarget, WorkloadClient } from './workload-client';

const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** What a release needs of its instance. */
export type ReleasedInstance = Pick<Instance, 'host' | 'dockerId' | 'ports'>;

export function targetOf(instance: Pick<Instance, 'id' | 'host' | 'dockerId' | 'ports'>): AppTarget {
  return { instanceId: instance.id, host: instance.host, dockerId: instance.dockerId ?? '', ports: instance.ports };
}

/**
 * The worker side of the instance life cycle: the Docker work behind each state change. Each step
 * starts by reading the row and does nothing if the row has moved on, so every job is safe to run twice.
 */
@Injectable()
export class InstanceLifecycleService {
  private readonly logger = new Logger(InstanceLifecycleService.name);

  constructor(
    private readonly config: AppConfig,
    private readonly dataSource: DataSource,
    private readonly store: InstanceStore,
    private readonly driver: ContainerDriver,
    private readonly workload: WorkloadClient,
    private readonly usage: HostUsageService,
    private readonly queues: QueueProducer,
  ) {}

  /** creating -> starting: creates and starts the container (adopting one a previous run created). */
  async create(instanceId: number): Promise<Instance | null> {
    const instance = await this.store.find(instanceId);
    if (!instance || instance.state !== 'creating') return null;
    const log = `instance ${instanceId}`;
    try {
      let dockerId = instance.dockerId;
      if (!dockerId) {
        const refusal = await this.usage.refusal(instance.host);
        if (refusal) {
          await this.store.markDeleted(instanceId, ['creating'], `creation refused: ${refusal}`);
          this.logger.warn(`${log}: creation refused: ${refusal}`);
          return null;
        }
        try {
          dockerId = await this.driver.create(instance.host, containerSpec(this.config, instance));
        } catch (error) {
          // A re-run after a crash finds the container it created under the same name: adopt it.
          const existing = error instanceof ContainerDriverError && error.statusCode === 409 ? await this.findContainer(instance) : null;
          if (!existing) throw error;
          dockerId = existing;
        }
      }
      if (!(await this.store.setDockerId(instanceId, dockerId))) {
        // The row moved on (deleted meanwhile): do not leave the container behind.
        await this.driver.remove(instance.host, dockerId);
        return null;
      }
      await this.driver.start(instance.host, dockerId);
      if (!(await this.store.transition(instanceId, ['creating'], 'starting', 'container started', { dockerId }))) return null;
      this.logger.log(`${log}: container ${dockerId.slice(0, 12)} started`);
      return await this.store.find(instanceId);
    } catch (error) {
      this.logger.warn(`${log}: create failed: ${message(error)}`);
      await this.store.transition(instanceId, ['creating'], 'error', `create failed: ${message(error)}`);
      return null;
    }
  }

  private async findContainer(instance: Instance): Promise<string | null> {
    const found = await this.driver.list(instance.host, { [OWNER_LABEL]: this.config.instanceNamePrefix, [INSTANCE_LABEL]: String(instance.id) });
    return found[0]?.id ?? null;
  }

  /**
   * Probes the app until it answers, within the retry budget (exponential backoff). Resolves true
   * when ready. Stops early when the container is not running.
   */
  async probeUntilReady(instance: Instance, isCurrent: () => Promise<boolean>): Promise<{ ready: boolean; reason: string }> {
    const probe = this.config.workload.probe;
    let interval = probe.intervalMs;
    let last = 'no probe ran';
    for (let attempt = 1; attempt <= probe.retries; attempt += 1) {
      try {
        await this.workload.probe(targetOf(instance));
        return { ready: true, reason: `ready after ${attempt} probe(s)` };
      } catch (error) {
        last = message(error);
      }
      if (attempt % 3 === 0 || attempt === probe.retries) {
        if (!(await isCurrent())) return { ready: false, reason: 'superseded' };
        const info = await this.driver.inspect(instance.host, instance.dockerId ?? '').catch(() => null);
        if (!info) return { ready: false, reason: 'container is gone' };
        if (!info.running && !info.paused) {
          return { ready: false, reason: `container is ${info.status}${info.exitCode !== null ? ` (exit code ${info.exitCode})` : ''}` };
        }
      }
      if (attempt < probe.retries) {
        await sleep(interval);
        interval = Math.min(interval * 2, probe.maxIntervalMs);
      }
    }
    return { ready: false, reason: `readiness probe failed ${probe.retries} times: ${last}` };
  }

  /** starting -> idle (paused, or running as a hot spare) | error. */
  async waitReady(instanceId: number): Promise<boolean> {
    const instance = await this.store.find(instanceId);
    if (!instance || instance.state !== 'starting' || !instance.dockerId) return false;
    const log = `instance ${instanceId}`;
    const stillStarting = async () => (await this.store.find(instanceId))?.state === 'starting';
    const result = await this.probeUntilReady(instance, stillStarting);
    if (!result.ready) {
      if (result.reason === 'superseded') return false;
      this.logger.warn(`${log}: not ready: ${result.reason}`);
      await this.store.transition(instanceId, ['starting'], 'error', result.reason);
      return false;
    }
    const dockerId = instance.dockerId;
    try {
      const loaded = await this.workload.prepare(targetOf(instance), undefined, this.config.workload.probe.timeoutMs * 2);
      const hot = await this.wantsHotSpare();
      // The pause and starting -> idle happen under the row lock, only while the row is still starting:
      // a concurrent delete or claim waits, then finds the row moved on, and is never paused under.
      const moved = await this.dataSource.transaction(async (manager) => {
        const [row] = (await manager.query(`SELECT "id" FROM "instance" WHERE "id" = $1 AND "state" = 'starting' FOR UPDATE`, [
          instanceId,
        ])) as { id: number }[];
        if (!row) return false;
        if (!hot) await this.driver.pause(instance.host, dockerId);
        const reason = hot ? `${result.reason}, hot spare` : `${result.reason}, paused`;
        return this.store.transition(
          instanceId,
          ['starting'],
          'idle',
          reason,
          { hot, loadedFile: loaded, readyAt: 'now', restartCount: 0, nextRestartAt: null },
          manager,
        );
      });
      if (moved) {
        this.logger.log(`${log}: idle${hot ? ' (hot)' : ''}`);
        this.pooled();
      }
      return moved;
    } catch (error) {
      this.logger.warn(`${log}: could not be put in the pool: ${message(error)}`);
      await this.store.transition(instanceId, ['starting'], 'error', `could not be put in the pool: ${message(error)}`);
      return false;
    }
  }

  /** Allocations waiting for an instance to come back into the pool. */
  private readonly idle = new WakeList();

  /** An instance just became idle here: wakes the allocations waiting for one. */
  private pooled(): void {
    this.idle.wake();
  }

  /** Resolves when an instance becomes idle in this process, or after `ms` (another process may have pooled one). */
  async waitForIdle(ms: number): Promise<void> {
    await this.idle.wait(ms);
  }

  /** True when the pool has fewer hot (unpaused) idle spares than configured. */
  async wantsHotSpare(): Promise<boolean> {
    if (this.config.pool.hotSpares === 0) return false;
    const [{ count }] = (await this.dataSource.query(
      `SELECT count(*)::int AS "count" FROM "instance" WHERE "state" = 'idle' AND "hot"`,
    )) as { count: number }[];
    return count < this.config.pool.hotSpares;
  }

  /**
   * releasing -> idle: reset the app, pause (or keep hot), back to the pool; any failure -> error.
   * `justReleased`: the instance as the statement that moved it to releasing returned it, when this
   * process runs the release right after that statement (nothing else moves a releasing row), so
   * it is not read again. A queued release always reads the row first.
   */
  async release(instanceId: number, justReleased?: ReleasedInstance): Promise<boolean> {
    const instance = justReleased
      ? { id: instanceId, state: 'releasing' as const, ...justReleased }
      : await this.store.find(instanceId);
    if (!instance || instance.state !== 'releasing' || !instance.dockerId) return false;
    const log = `instance ${instanceId}`;
    try {
      const timeoutMs = this.config.workload.probe.timeoutMs * 2;
      let loaded: string | null;
      try {
        loaded = await this.workload.prepareAndCheck(targetOf(instance), undefined, timeoutMs);
      } catch (error) {
        // A re-run (or a container paused behind our back) may find it paused: unpause and try once more.
        const info = await this.driver.inspect(instance.host, instance.dockerId);
        if (!info.paused) throw error;
        await this.driver.unpause(instance.host, instance.dockerId);
        loaded = await this.workload.prepareAndCheck(targetOf(instance), undefined, timeoutMs);
      }
      const hot = await this.wantsHotSpare();
      if (!hot) await this.driver.pause(instance.host, instance.dockerId);
      const moved = await this.store.transition(instanceId, ['releasing'], 'idle', hot ? 'released, hot spare' : 'released, reset and paused', {
        hot,
        loadedFile: loaded,
      });
      if (moved) {
        this.logger.log(`${log}: back in the pool`);
        this.pooled();
      }
      return moved;
    } catch (error) {
      if (!(await this.driver.ping(instance.host).then(() => true, () => false))) {
        // The engine is down, not the instance: stay releasing; the monitor retries once it is back.
        this.logger.warn(`${log}: release postponed, Docker host ${instance.host} unreachable: ${message(error)}`);
        return false;
      }
      this.logger.warn(`${log}: release failed: ${message(error)}`);
      await this.store.transition(instanceId, ['releasing'], 'error', `release failed: ${message(error)}`);
      return false;
    }
  }

  /** deleting -> deleted: removes the container and frees the ports. */
  async delete(instanceId: number): Promise<boolean> {
    const instance = await this.store.find(instanceId);
    if (!instance || instance.state !== 'deleting') return false;
    const dockerId = instance.dockerId ?? (await this.findContainer(instance));
    if (dockerId) await this.driver.remove(instance.host, dockerId);
    const moved = await this.store.markDeleted(instanceId, ['deleting'], instance.stateReason);
    if (moved) this.logger.log(`instance ${instanceId}: deleted (${instance.stateReason})`);
    return moved;
  }

  /** error -> starting: restarts the container, then probes it again (through a wait-ready job). */
  async restart(instanceId: number): Promise<boolean> {
    const instance = await this.store.find(instanceId);
    if (!instance || instance.state !== 'error') return false;
    const log = `instance ${instanceId}`;
    if (!instance.dockerId) {
      await this.store.transition(instanceId, ['error'], 'deleting', 'no container to restart');
      await this.queues.delete({ instanceId }).catch(() => undefined);
      return false;
    }
    try {
      const info = await this.driver.inspect(instance.host, instance.dockerId);
      if (info.paused) await this.driver.unpause(instance.host, instance.dockerId);
      await this.driver.restart(instance.host, instance.dockerId);
    } catch (error) {
      if (error instanceof ContainerDriverError && error.notFound) {
        await this.store.markDeleted(instanceId, ['error'], 'container vanished');
        return false;
      }
      this.logger.warn(`${log}: restart failed: ${message(error)}`);
      await this.store.transition(instanceId, ['error'], 'error', `restart failed: ${message(error)}`, {
        restartCount: 'increment',
        nextRestartAt: this.nextRestartAt(instance.restartCount + 1),
      });
      return false;
    }
    const moved = await this.store.transition(
      instanceId,
      ['error'],
      'starting',
      `restarted (attempt ${instance.restartCount + 1} of ${this.config.monitor.restartLimit})`,
      { restartCount: 'increment', nextRestartAt: this.nextRestartAt(instance.restartCount + 1), hot: false },
    );
    if (moved) {
      this.logger.log(`${log}: restarted`);
      await this.waitReady(instanceId);
    }
    return moved;
  }

  nextRestartAt(attempt: number): Date {
    return new Date(Date.now() + this.config.monitor.restartBackoffMs * 2 ** Math.max(0, attempt - 1));
  }
}
