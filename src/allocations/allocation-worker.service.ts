import { Injectable, Logger } from '@nestjs/common';
import { AppConfig } from '../config/app-config';
import { CapacityError } from '../common/errors';
import { ContainerDriver } from '../container-driver/container-driver';
import { CapacityService } from '../instances/capacity.service';
import { InstanceLifecycleService, ReleasedInstance, targetOf } from '../instances/instance-lifecycle.service';
import { Instance } from '../instances/instance.entity';
import { InstanceStore } from '../instances/instance.store';
import { WorkloadClient } from '../instances/workload-client';
import { QueueProducer } from '../queues/queue.producer';
import { AllocationWaiter } from './allocation-waiter';
import { AllocationStore, ClaimedAllocation, ClaimedInstance, HandOut } from './allocation.store';
import { returnUnheld } from './return-unheld';

const MAX_INSTANCE_TRIES = 5;
/** While waiting for an instance on its way back into the pool, look again at least this often. */
const IDLE_POLL_MS = 25;
const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/**
 * The worker side of allocations (high-priority queue): claim an idle instance, unpause it, load the
 * session's file, check it answers, then activate. An instance failing any step goes to error and
 * the next one is tried; with none idle, one is created within the limits (cold path).
 */
@Injectable()
export class AllocationWorkerService {
  private readonly logger = new Logger(AllocationWorkerService.name);

  constructor(
    private readonly config: AppConfig,
    private readonly allocations: AllocationStore,
    private readonly instances: InstanceStore,
    private readonly lifecycle: InstanceLifecycleService,
    private readonly capacity: CapacityService,
    private readonly driver: ContainerDriver,
    private readonly workload: WorkloadClient,
    private readonly queues: QueueProducer,
    private readonly waiter: AllocationWaiter,
  ) {}

  /** `held`: the instance the allocation took with its row (the API's claim), if any. */
  async allocate(allocationId: number, held?: { instance: ClaimedInstance; fileUrl: string | null }): Promise<string> {
    let handOut: HandOut | undefined;
    try {
      return await this.allocateOnce(allocationId, held, (active) => (handOut = active));
    } finally {
      // The row is settled (or will be re-run): wake a request waiting in this same process.
      this.waiter.settled(allocationId, handOut);
    }
  }

  private async allocateOnce(
    allocationId: number,
    held: { instance: ClaimedInstance; fileUrl: string | null } | undefined,
    onActive: (handOut: HandOut) => void,
  ): Promise<string> {
    const log = `allocation ${allocationId}`;
    const started = performance.now();
    const phases: string[] = [];
    const mark = (phase: string) => phases.push(`${phase} ${(performance.now() - started).toFixed(1)}`);
    for (let attempt = 1; attempt <= MAX_INSTANCE_TRIES; attempt += 1) {
      // The API's claim: go straight to the engine, checking meanwhile that the row still holds the
      // instance (a job re-run after its allocation settled must not touch what is no longer its own).
      const fromApi = attempt === 1 && held !== undefined;
      const claim = fromApi ? { allocation: { id: allocationId, fileUrl: held.fileUrl }, instance: held.instance } : await this.allocations.claimIdle(allocationId);
      const stillHeld = fromApi ? this.allocations.holds(allocationId, held.instance.id).catch(() => false) : Promise.resolve(true);
      mark('claimed');
      if (claim === 'not-pending') return 'not pending';
      let instance: ClaimedInstance;
      let wasPaused: boolean;
      if (claim === null) {
        const fresh = await this.createForAllocation(allocationId);
        if (fresh === 'failed') return 'failed';
        if (fresh === 'wait') {
          // At the instance limit with some on their way back into the pool: take the next one.
          if (performance.now() - started > this.config.allocation.timeoutMs) {
            await this.allocations.fail(allocationId, 'timeout', `no instance was ready within ${this.config.allocation.timeoutMs} ms`);
            return 'failed';
          }
          await this.lifecycle.waitForIdle(IDLE_POLL_MS);
          attempt -= 1;
          continue;
        }
        // The new instance was lost meanwhile: the next attempt finds out whether the allocation still waits.
        if (fresh === 'lost') continue;
        instance = fresh;
        wasPaused = false;
      } else {
        instance = claim.instance;
        wasPaused = !instance.hot;
      }
      const allocation: ClaimedAllocation | null = claim === null ? await this.allocations.find(allocationId) : claim.allocation;
      if (!allocation) return 'gone';
      try {
        if (wasPaused) {
          // A re-run after a crash may find the container already unpaused.
          await this.driver.unpause(instance.host, instance.dockerId ?? '').catch(async (error: unknown) => {
            const info = await this.driver.inspect(instance.host, instance.dockerId ?? '');
            if (info.paused || !info.running) throw error;
          });
          mark('unpaused');
        }
        if (!(await stillHeld)) {
          this.logger.warn(`${log}: no longer holds instance ${instance.id}; leaving it`);
          return 'not pending';
        }
        const loaded = await this.workload.prepareAndCheck(targetOf(instance), allocation.fileUrl ?? undefined, this.config.workload.probe.timeoutMs * 2);
        mark('prepared');
        const active = await this.allocations.activate(allocationId, instance.id, loaded);
        if (active) {
          onActive(active);
          mark('active');
          this.logger.log(`${log}: active on instance ${instance.id}${loaded ? ` with ${loaded}` : ''}`);
          this.logger.debug?.(`${log}: ms since job start: ${phases.join(', ')}`);
          this.queues.replenishSoon();
          return 'active';
        }
        // The allocation stopped waiting (timed out or cancelled): give the instance back.
        this.logger.warn(`${log}: no longer pending, returning instance ${instance.id} to the pool`);
        await returnUnheld(this.allocations, this.queues, instance.id, 'its allocation stopped waiting');
        return 'abandoned';
      } catch (error) {
        if (!(await this.engineAnswers(instance.host))) {
          // Not the instance's fault: it goes back through a release once the engine is back.
          this.logger.warn(`${log}: Docker host ${instance.host} unreachable: ${message(error)}`);
          await this.allocations.dropFailedInstance(allocationId, instance.id, 'engine unreachable while being prepared', 'releasing');
          await this.allocations.fail(allocationId, 'engine', `the Docker engine on ${instance.host} is unreachable: ${message(error)}`);
          return 'failed';
        }
        this.logger.warn(`${log}: instance ${instance.id} failed to prepare: ${message(error)}`);
        await this.allocations.dropFailedInstance(allocationId, instance.id, `failed while being prepared: ${message(error)}`);
        if (allocation.fileUrl && /cannot load|not found|bad path/i.test(message(error))) {
          await this.allocations.fail(allocationId, 'file', `the app could not load ${allocation.fileUrl}: ${message(error)}`);
          return 'failed';
        }
      }
    }
    await this.allocations.fail(allocationId, 'engine', `no instance could be prepared after ${MAX_INSTANCE_TRIES} tries`);
    return 'failed';
  }

  /**
   * Cold path: create an instance for this allocation, within the limits, and wait until it answers.
   * The allocation claims it as soon as it is started, before the probe: a starting instance that
   * turned idle could be taken by another allocation (or pooled by a wait-ready job).
   */
  private async createForAllocation(allocationId: number): Promise<Instance | 'failed' | 'lost' | 'wait'> {
    const log = `allocation ${allocationId}`;
    let reserved: Instance;
    try {
      [reserved] = await this.capacity.reserve(1, `created for allocation ${allocationId}`);
    } catch (error) {
      if (error instanceof CapacityError) {
        if ((await this.instances.idleOrComingBack()) > 0) return 'wait';
        await this.allocations.fail(allocationId, 'capacity', error.message);
        return 'failed';
      }
      throw error;
    }
    this.logger.log(`${log}: no idle instance, creating instance ${reserved.id}`);
    const started = await this.lifecycle.create(reserved.id);
    if (!started) {
      const row = await this.instances.find(reserved.id);
      await this.allocations.fail(allocationId, row?.state === 'deleted' ? 'capacity' : 'engine', `instance ${reserved.id}: ${row?.stateReason ?? 'creation failed'}`);
      return 'failed';
    }
    if (!(await this.allocations.claimFresh(allocationId, reserved.id))) {
      // The allocation gave up meanwhile (or the instance moved on): the new instance joins the pool through the usual path.
      await this.lifecycle.waitReady(reserved.id);
      return 'lost';
    }
    const result = await this.lifecycle.probeUntilReady(started, async () => (await this.instances.find(reserved.id))?.state === 'allocated');
    if (!result.ready) {
      if (result.reason === 'superseded') return 'lost';
      await this.allocations.dropFailedInstance(allocationId, reserved.id, result.reason);
      await this.allocations.fail(allocationId, 'engine', `new instance ${reserved.id} did not become ready: ${result.reason}`);
      return 'failed';
    }
    await this.instances.transition(reserved.id, ['allocated'], 'allocated', `created for allocation ${allocationId}`, { readyAt: 'now' });
    return (await this.instances.find(reserved.id)) ?? 'lost';
  }

  private async engineAnswers(host: string): Promise<boolean> {
    try {
      await this.driver.ping(host);
      return true;
    } catch {
      return false;
    }
  }

  async deallocate(instanceId: number, justReleased?: ReleasedInstance): Promise<string> {
    const released = await this.lifecycle.release(instanceId, justReleased);
    if (released) this.queues.replenishSoon();
    return released ? 'idle' : 'not releasing';
  }
}
