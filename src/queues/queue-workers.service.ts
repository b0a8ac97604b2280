import { Injectable, Logger, OnApplicationBootstrap, OnModuleDestroy } from '@nestjs/common';
import { Job, Queue } from 'bull';
import { AllocationWorkerService } from '../allocations/allocation-worker.service';
import { AppConfig } from '../config/app-config';
import { InstanceLifecycleService } from '../instances/instance-lifecycle.service';
import { PoolService } from '../instances/pool.service';
import { MonitorService } from '../health/monitor.service';
import { AllocateJob, DeallocateJob, HighJob, InstanceJob, NormalJob } from './queue.constants';
import { QueueProducer } from './queue.producer';

/**
 * The worker role's queue processors. Each job moves one row forward and is safe to run twice;
 * a failure is logged with the row's id and rethrown so Bull's retry policy applies.
 */
@Injectable()
export class QueueWorkersService implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly logger = new Logger(QueueWorkersService.name);

  constructor(
    private readonly config: AppConfig,
    private readonly queues: QueueProducer,
    private readonly allocations: AllocationWorkerService,
    private readonly lifecycle: InstanceLifecycleService,
    private readonly pool: PoolService,
    private readonly monitor: MonitorService,
  ) {}

  onApplicationBootstrap(): void {
    const { high, normal } = this.config.workerConcurrency;
    const allocate = (data: AllocateJob) =>
      this.allocations.allocate(data.allocationId, data.instance && { instance: data.instance, fileUrl: data.fileUrl ?? null });
    const deallocate = (data: DeallocateJob) => this.allocations.deallocate(data.instanceId, data.justReleased);
    this.register(this.queues.high, HighJob.Allocate, high, (job: Job<AllocateJob>) => allocate(job.data));
    this.register(this.queues.high, HighJob.Deallocate, high, (job: Job<DeallocateJob>) => deallocate(job.data));
    // Requests answered by this same process skip Redis for their hand-out and release.
    if (this.config.role === 'all' && this.config.localHandoff) {
      this.queues.serveLocally(HighJob.Allocate, high, allocate);
      this.queues.serveLocally(HighJob.Deallocate, high, deallocate);
    }
    this.register(this.queues.normal, NormalJob.Create, normal, async (job: Job<InstanceJob>) => {
      const started = await this.lifecycle.create(job.data.instanceId);
      if (started) await this.queues.waitReady({ instanceId: started.id }, started.restartCount);
      return started ? 'starting' : 'no-op';
    });
    this.register(this.queues.normal, NormalJob.WaitReady, normal, async (job: Job<InstanceJob>) =>
      (await this.lifecycle.waitReady(job.data.instanceId)) ? 'idle' : 'not ready',
    );
    this.register(this.queues.normal, NormalJob.Delete, normal, async (job: Job<InstanceJob>) =>
      (await this.lifecycle.delete(job.data.instanceId)) ? 'deleted' : 'no-op',
    );
    this.register(this.queues.normal, NormalJob.Restart, normal, async (job: Job<InstanceJob>) =>
      (await this.lifecycle.restart(job.data.instanceId)) ? 'restarted' : 'no-op',
    );
    this.register(this.queues.normal, NormalJob.Replenish, 1, async () => JSON.stringify(await this.pool.replenish()));
    this.register(this.queues.normal, NormalJob.Monitor, 1, async () => JSON.stringify(await this.monitor.pass()));
    this.logger.log(`processing jobs: high x${high}, normal x${normal}`);
  }

  async onModuleDestroy(): Promise<void> {
    // Let running jobs finish; new ones stay queued for the next worker.
    await Promise.allSettled([this.queues.high.close(), this.queues.normal.close(), this.queues.drainLocal()]);
  }

  private register<T>(queue: Queue, name: string, concurrency: number, handler: (job: Job<T>) => Promise<string>): void {
    void queue.process(name, concurrency, async (job: Job<T>) => {
      const started = Date.now();
      if (this.queues.isRunningHere(String(job.id))) return 'running in this process';
      try {
        const result = await handler(job);
        this.logger.debug?.(`${name} ${String(job.id)} -> ${result} in ${Date.now() - started} ms`);
        return result;
      } catch (error) {
        this.logger.warn(`${name} ${String(job.id)} failed after ${Date.now() - started} ms: ${error instanceof Error ? error.message : String(error)}`);
        throw error;
      }
    });
  }
}
