import { Injectable, Logger } from '@nestjs/common';
import { DataSource, In, IsNull, Not } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { ConflictError, EngineError, InvalidRequestError, NotFoundError, ServiceUnavailableError } from '../common/errors';
import { FilesService } from '../files/files.service';
import { StateChange } from '../history/state-change.entity';
import { Instance } from '../instances/instance.entity';
import { jobId } from '../queues/queue.constants';
import { QueueProducer } from '../queues/queue.producer';
import { AllocationWaiter } from './allocation-waiter';
import { Allocation } from './allocation.entity';
import { AllocationStore, InstanceAddress, NewAllocation } from './allocation.store';
import { CreateAllocationDto } from './dto/create-allocation.dto';
import { returnUnheld } from './return-unheld';
import { AllocationFilter } from './dto/list-allocations.query';

const POLL_MS = 250;

export interface AllocationOutcome {
  allocation: Allocation;
  instance: InstanceAddress | null;
  /** true when the answer is a new allocation made for this request. */
  created: boolean;
}

/** The API side of allocations: validates, writes the row, enqueues the job and waits on the row. */
@Injectable()
export class AllocationsService {
  private readonly logger = new Logger(AllocationsService.name);

  constructor(
    private readonly config: AppConfig,
    private readonly dataSource: DataSource,
    private readonly store: AllocationStore,
    private readonly queues: QueueProducer,
    private readonly waiter: AllocationWaiter,
    private readonly files: FilesService,
  ) {}

  async allocate(body: CreateAllocationDto, idempotencyKey: string | undefined, respondAsync: boolean): Promise<AllocationOutcome> {
    const input = await this.validate(body, idempotencyKey);
    if (input.idempotencyKey) {
      const existing = await this.store.findByKey(input.idempotencyKey);
      if (existing) return this.replay(existing, respondAsync);
    }
    let allocation: Allocation;
    try {
      // Hot path: a spare that is already running and reset, taken in one statement.
      if (input.fileUrl === null && this.config.pool.hotSpares > 0) {
        const handed = await this.store.claimHotSpare(input);
        if (handed) {
          this.logger.log(`allocation ${handed.allocation.id}: active on hot spare ${handed.allocation.instanceId}`);
          this.queues.replenishSoon();
          return { ...handed, created: true };
        }
      }
      this.queues.assertConnected();
      // Warm path: the new row already holds an idle instance; the worker only unpauses and resets it.
      const { allocation: inserted, claimed } = await this.store.insertClaiming(input);
      allocation = inserted;
      await this.queues.allocate(claimed ? { allocationId: allocation.id, instance: claimed, fileUrl: input.fileUrl } : { allocationId: allocation.id }).catch(async (error: unknown) => {
        await this.store.fail(allocation.id, 'queue', 'the job queue was unavailable');
        // The instance it held goes back through a release (the monitor also finds it).
        if (claimed) await returnUnheld(this.store, this.queues, claimed.id, 'its allocation could not be queued').catch(() => undefined);
        throw error;
      });
    } catch (error) {
      if (input.idempotencyKey && isUniqueViolation(error)) {
        const existing = await this.store.findByKey(input.idempotencyKey);
        if (existing) return this.replay(existing, respondAsync);
      }
      throw error;
    }
    if (respondAsync) return { allocation, instance: null, created: true };
    return this.settle(allocation.id, true, false);
  }

  private async replay(existing: Allocation, respondAsync: boolean): Promise<AllocationOutcome> {
    if (existing.state === 'pending' && !respondAsync) return this.settle(existing.id, false, true);
    return { allocation: existing, instance: await this.instanceOf(existing), created: false };
  }

  private async validate(body: CreateAllocationDto, idempotencyKey: string | undefined): Promise<NewAllocation> {
    if (idempotencyKey !== undefined && (idempotencyKey.length === 0 || idempotencyKey.length > 255)) {
      throw new InvalidRequestError('Idempotency-Key must be 1 to 255 characters');
    }
    const labels = body.labels ?? {};
    const entries = Object.entries(labels);
    if (entries.length > 50) throw new InvalidRequestError('labels must have at most 50 entries');
    for (const [key, value] of entries) {
      if (typeof value !== 'string' || key.length > 100 || value.length > 500) {
        throw new InvalidRequestError(`label ${JSON.stringify(key).slice(0, 60)} must map a key of at most 100 characters to a string of at most 500`);
      }
    }
    const maxLease = this.config.allocation.maxLeaseSeconds;
    if (body.leaseSeconds !== undefined && body.leaseSeconds > maxLease) {
      throw new InvalidRequestError(`leaseSeconds must be at most ${maxLease}`);
    }
    const fileUrl = body.file === undefined ? null : await this.files.resolveForAllocation(body.file);
    return {
      fileUrl,
      leaseSeconds: body.leaseSeconds ?? this.config.allocation.defaultLeaseSeconds,
      labels,
      idempotencyKey: idempotencyKey ?? null,
    };
  }

  /**
   * Waits until the allocation leaves pending; the row tells the outcome (a worker in this process
   * hands it over directly). Past the timeout the allocation fails (if still pending) and the
   * answer is a 503. `readFirst` is false right after the insert, when the row is known pending.
   */
  private async settle(id: number, created: boolean, readFirst: boolean): Promise<AllocationOutcome> {
    const deadline = Date.now() + this.config.allocation.timeoutMs;
    const job = jobId.allocate(id);
    let read = readFirst;
    for (;;) {
      if (read) {
        const found = await this.store.findWithInstance(id);
        if (!found) throw new NotFoundError(`allocation ${id} does not exist`);
        if (found.allocation.state !== 'pending') return this.outcome(found.allocation, created, found.instance);
      }
      read = true;
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      const handed = await this.waiter.wait(job, Math.min(POLL_MS, remaining));
      if (handed) return this.outcome(handed.allocation, created, handed.instance);
    }
    await this.store.fail(id, 'timeout', `no instance was ready within ${this.config.allocation.timeoutMs} ms`);
    return this.outcome((await this.store.find(id))!, created);
  }

  private async outcome(allocation: Allocation, created: boolean, instance?: InstanceAddress | null): Promise<AllocationOutcome> {
    if (allocation.state === 'failed') {
      const message = `allocation ${allocation.id} failed: ${allocation.stateReason}`;
      switch (allocation.failure) {
        case 'engine':
          throw new EngineError(message);
        case 'file':
          throw new InvalidRequestError(message);
        case 'capacity':
        case 'timeout':
        case 'queue':
        case 'cancelled':
        case null:
          throw new ServiceUnavailableError(message, this.config.allocation.retryAfterSeconds);
      }
    }
    return { allocation, instance: instance !== undefined ? instance : await this.instanceOf(allocation), created };
  }

  async instanceOf(allocation: Allocation): Promise<Instance | null> {
    if (allocation.instanceId === null) return null;
    return this.dataSource.getRepository(Instance).findOneBy({ id: allocation.instanceId });
  }

  async list(show: AllocationFilter, limit: number, offset: number): Promise<{ items: Allocation[]; instances: Map<number, Instance>; total: number }> {
    const where =
      show === 'current' ? { deletedAt: IsNull() } : show === 'finished' ? { deletedAt: Not(IsNull()) } : {};
    const [items, total] = await this.dataSource
      .getRepository(Allocation)
      .findAndCount({ where, order: { id: 'ASC' }, take: limit, skip: offset });
    const ids = [...new Set(items.map((item) => item.instanceId).filter((id): id is number => id !== null))];
    const instances = ids.length ? await this.dataSource.getRepository(Instance).findBy({ id: In(ids) }) : [];
    return { items, total, instances: new Map(instances.map((instance) => [instance.id, instance])) };
  }

  async get(id: number): Promise<{ allocation: Allocation; instance: Instance | null }> {
    const found = await this.store.findWithInstance(id);
    if (!found) throw new NotFoundError(`allocation ${id} does not exist`);
    return found;
  }

  async history(id: number): Promise<StateChange[]> {
    await this.get(id);
    return this.dataSource.getRepository(StateChange).find({ where: { allocationId: id }, order: { id: 'ASC' } });
  }

  /** Ends the allocation (idempotent: an ended one is answered as it is) and queues the instance's release. */
  async deallocate(id: number): Promise<{ allocation: Allocation; instance: Instance | null }> {
    const { releaseInstance } = await this.store.close(id, 'ended', 'ended by the client');
    // The release is queued while the answer is read; the monitor re-derives it from the row if the
    // job cannot be queued now.
    const queued = releaseInstance
      ? this.queues
          .deallocate(
            {
              instanceId: releaseInstance.id,
              justReleased: { host: releaseInstance.host, dockerId: releaseInstance.dockerId, ports: releaseInstance.ports },
            },
            releaseInstance.allocationCount,
          )
          .then(
            () => undefined,
            (error: unknown) => this.logger.warn(`instance ${releaseInstance.id}: deallocate job not queued: ${String(error)}`),
          )
      : undefined;
    const [answer] = await Promise.all([this.get(id), queued]);
    return answer;
  }

  async renew(id: number, seconds: number | undefined): Promise<{ allocation: Allocation; instance: Instance | null }> {
    const { allocation } = await this.get(id);
    const lease = seconds ?? allocation.leaseSeconds;
    if (lease > this.config.allocation.maxLeaseSeconds) {
      throw new InvalidRequestError(`leaseSeconds must be at most ${this.config.allocation.maxLeaseSeconds}`);
    }
    if (!(await this.store.renew(id, lease))) {
      throw new ConflictError(`allocation ${id} is ${allocation.state}; only an active allocation's lease can be renewed`);
    }
    return this.get(id);
  }
}

function isUniqueViolation(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: string }).code === '23505';
}
