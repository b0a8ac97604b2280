import { InjectQueue } from '@nestjs/bull';
import { Injectable, Logger } from '@nestjs/common';
import { Job, JobOptions, Queue } from 'bull';
import { ServiceUnavailableError } from '../common/errors';
import {
  AllocateJob,
  DeallocateJob,
  HIGH_QUEUE,
  HighJob,
  HighJobName,
  InstanceJob,
  JOB_OPTIONS,
  jobId,
  NORMAL_QUEUE,
  NormalJob,
} from './queue.constants';

const ADD_TIMEOUT_MS = 2000;
/** Hand-outs and releases ask for a pool top-up; at most one is queued per this window. */
const REPLENISH_COALESCE_MS = 100;

interface LocalProcessor {
  handler: (data: unknown) => Promise<string>;
  limit: number;
  running: number;
}

/**
 * The one place jobs are enqueued. Fails fast with a clear 503 while Redis is unreachable instead of hanging.
 *
 * Allocations and releases are what a waiting user feels: when this process also runs the worker
 * (ROLE=all), it runs them itself, without the round trips through Redis, as long as it has a free
 * slot; otherwise, and always for an API-only process, they go through the high queue. Either way
 * the row is the truth: a run lost with its process is re-queued by the monitor, like a lost job.
 */
@Injectable()
export class QueueProducer {
  private readonly logger = new Logger(QueueProducer.name);
  private readonly local = new Map<HighJobName, LocalProcessor>();
  /** Ids of the jobs running in this process without Bull; a Bull twin of one of them is skipped. */
  private readonly runningHere = new Map<string, Promise<void>>();

  constructor(
    @InjectQueue(HIGH_QUEUE) readonly high: Queue,
    @InjectQueue(NORMAL_QUEUE) readonly normal: Queue,
  ) {}

  async allocate(data: AllocateJob): Promise<void> {
    const id = jobId.allocate(data.allocationId);
    if (this.runLocally(HighJob.Allocate, id, data)) return;
    await this.add(this.high, HighJob.Allocate, data, { ...JOB_OPTIONS.allocate, jobId: id });
  }

  async deallocate(data: DeallocateJob, allocationCount: number): Promise<void> {
    const id = jobId.deallocate(data.instanceId, allocationCount);
    if (this.runLocally(HighJob.Deallocate, id, data)) return;
    // A queued release may run later or elsewhere: it reads the row itself.
    await this.add(this.high, HighJob.Deallocate, { instanceId: data.instanceId }, { ...JOB_OPTIONS.deallocate, jobId: id });
  }

  /** The worker in this process takes these jobs directly, up to `limit` at once. */
  serveLocally<T>(name: HighJobName, limit: number, handler: (data: T) => Promise<string>): void {
    this.local.set(name, { handler: handler as (data: unknown) => Promise<string>, limit, running: 0 });
  }

  /** True while a job with this id runs in this process: its Bull twin (a re-queue) has nothing to do. */
  isRunningHere(id: string): boolean {
    return this.runningHere.has(id);
  }

  /** Waits for the jobs running in this process (at shutdown). */
  async drainLocal(): Promise<void> {
    await Promise.allSettled([...this.runningHere.values()]);
  }

  private runLocally(name: HighJobName, id: string, data: unknown): boolean {
    const processor = this.local.get(name);
    if (!processor) return false;
    if (this.runningHere.has(id)) return true;
    if (processor.running >= processor.limit) return false;
    processor.running += 1;
    const started = Date.now();
    const run = processor
      .handler(data)
      .then(
        (result) => this.logger.debug?.(`${name} ${id} (local) -> ${result} in ${Date.now() - started} ms`),
        (error: unknown) => this.logger.warn(`${name} ${id} (local) failed after ${Date.now() - started} ms: ${String(error)}`),
      )
      .finally(() => {
        processor.running -= 1;
        this.runningHere.delete(id);
      });
    this.runningHere.set(id, run);
    return true;
  }

  create(data: InstanceJob): Promise<Job<InstanceJob>> {
    return this.add(this.normal, NormalJob.Create, data, { ...JOB_OPTIONS.create, jobId: jobId.create(data.instanceId) });
  }

  delete(data: InstanceJob): Promise<Job<InstanceJob>> {
    return this.add(this.normal, NormalJob.Delete, data, { ...JOB_OPTIONS.delete, jobId: jobId.delete(data.instanceId) });
  }

  waitReady(data: InstanceJob, restartCount: number): Promise<Job<InstanceJob>> {
    return this.add(this.normal, NormalJob.WaitReady, data, {
      ...JOB_OPTIONS['wait-ready'],
      jobId: jobId.waitReady(data.instanceId, restartCount),
    });
  }

  restart(data: InstanceJob, restartCount: number, delayMs = 0): Promise<Job<InstanceJob>> {
    return this.add(this.normal, NormalJob.Restart, data, {
      ...JOB_OPTIONS.restart,
      delay: delayMs,
      jobId: jobId.restart(data.instanceId, restartCount),
    });
  }

  private replenishTimer: NodeJS.Timeout | undefined;

  /**
   * A pool top-up shortly: the requests of a burst of hand-outs and releases become one job, queued
   * after the burst instead of one per allocation on its critical path.
   */
  replenishSoon(): void {
    if (this.replenishTimer) return;
    this.replenishTimer = setTimeout(() => {
      this.replenishTimer = undefined;
      this.replenish().catch((error: unknown) => this.logger.debug(`pool top-up not queued: ${String(error)}`));
    }, REPLENISH_COALESCE_MS);
    this.replenishTimer.unref();
  }

  replenish(): Promise<Job<Record<string, never>>> {
    return this.add(this.normal, NormalJob.Replenish, {}, { ...JOB_OPTIONS.replenish, jobId: jobId.replenish() });
  }

  monitor(): Promise<Job<Record<string, never>>> {
    return this.add(this.normal, NormalJob.Monitor, {}, { ...JOB_OPTIONS.monitor, jobId: jobId.monitor() });
  }

  /** True when both queues' Redis connections are usable right now. */
  isConnected(): boolean {
    return this.high.client.status === 'ready' && this.normal.client.status === 'ready';
  }

  /** Throws a 503 when the queues cannot take jobs, so callers write nothing they could not follow up. */
  assertConnected(): void {
    if (!this.isConnected()) {
      throw new ServiceUnavailableError(`the job queue (Redis) is unavailable: ${this.high.client.status}`);
    }
  }

  private async add<T>(queue: Queue, name: string, data: T, options: JobOptions): Promise<Job<T>> {
    if (queue.client.status !== 'ready') {
      throw new ServiceUnavailableError(`the job queue (Redis) is unavailable: ${queue.client.status}`);
    }
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        queue.add(name, data, options) as Promise<Job<T>>,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new ServiceUnavailableError('the job queue (Redis) did not accept the job in time')),
            ADD_TIMEOUT_MS,
          );
        }),
      ]);
    } catch (error) {
      if (error instanceof ServiceUnavailableError) throw error;
      this.logger.warn(`enqueue ${name} ${options.jobId ?? ''} failed: ${String(error)}`);
      throw new ServiceUnavailableError('the job queue (Redis) is unavailable');
    } finally {
      clearTimeout(timer);
    }
  }
}
