import { Injectable, Logger } from '@nestjs/common';
import { DataSource, FindOptionsWhere, In, IsNull, Not } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { NotFoundError } from '../common/errors';
import { StateChange } from '../history/state-change.entity';
import { QueueProducer } from '../queues/queue.producer';
import { CapacityService } from './capacity.service';
import { InstanceFilter } from './dto/list-instances.query';
import { Instance } from './instance.entity';
import { InstanceState } from './instance-state';
import { InstanceStore } from './instance.store';
import { Port } from './port.entity';

const FILTERS: Record<InstanceFilter, InstanceState[] | null> = {
  all: null,
  starting: ['creating', 'starting'],
  deallocated: ['idle'],
  allocated: ['allocated', 'releasing'],
  running: ['creating', 'starting', 'idle', 'allocated', 'releasing', 'error', 'deleting'],
  finished: ['deleted'],
  error: ['error'],
};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The API side of instances: reads rows, writes requests, enqueues the Docker work. */
@Injectable()
export class InstancesService {
  private readonly logger = new Logger(InstancesService.name);

  constructor(
    private readonly config: AppConfig,
    private readonly dataSource: DataSource,
    private readonly capacity: CapacityService,
    private readonly store: InstanceStore,
    private readonly queues: QueueProducer,
  ) {}

  async list(show: InstanceFilter, limit: number, offset: number): Promise<{ items: Instance[]; total: number }> {
    const states = FILTERS[show];
    const where: FindOptionsWhere<Instance> = states ? { state: In(states) } : {};
    const [items, total] = await this.dataSource
      .getRepository(Instance)
      .findAndCount({ where, order: { id: 'ASC' }, take: limit, skip: offset });
    return { items, total };
  }

  async get(id: number): Promise<Instance> {
    const instance = await this.store.find(id);
    if (!instance) throw new NotFoundError(`instance ${id} does not exist`);
    return instance;
  }

  async history(id: number): Promise<StateChange[]> {
    await this.get(id);
    return this.dataSource.getRepository(StateChange).find({ where: { instanceId: id }, order: { id: 'ASC' } });
  }

  /** Reserves the instances within the limits and enqueues their creation; 503 when a limit refuses. */
  async create(count: number): Promise<Instance[]> {
    // Nothing is written while the queue cannot take the jobs.
    this.queues.assertConnected();
    const instances = await this.capacity.reserve(count, 'requested through the API');
    for (const instance of instances) {
      this.logger.log(`instance ${instance.id}: reserved on ${instance.host} with ports ${JSON.stringify(instance.ports)}`);
      // A lost job is re-derived from the row by the monitor, so a failure here is not fatal.
      await this.queues.create({ instanceId: instance.id }).catch((error: unknown) => {
        this.logger.warn(`instance ${instance.id}: create job not queued: ${String(error)}`);
      });
    }
    return instances;
  }

  /** Waits until none of the instances is creating or starting any more, or the timeout passes. */
  async waitSettled(ids: number[], timeoutMs: number): Promise<Instance[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const rows = await this.dataSource.getRepository(Instance).find({ where: { id: In(ids) }, order: { id: 'ASC' } });
      const settled = rows.every((row) => !['creating', 'starting'].includes(row.state));
      if (settled || Date.now() >= deadline) return rows;
      await sleep(100);
    }
  }

  /**
   * Deletes an instance: its open allocation (if any) ends first, then the container is removed by a
   * job and the port released; the row stays with deletedAt. Deleting a deleted instance answers it as is.
   */
  async delete(id: number): Promise<Instance> {
    const moved = await this.dataSource.transaction(async (manager) => {
      const instance = await manager
        .getRepository(Instance)
        .createQueryBuilder('instance')
        .setLock('pessimistic_write')
        .where('instance.id = :id', { id })
        .getOne();
      if (!instance) throw new NotFoundError(`instance ${id} does not exist`);
      if (instance.state === 'deleted' || instance.state === 'deleting') return false;
      await manager.query(
        `UPDATE "allocation" SET "state" = CASE WHEN "state" = 'pending' THEN 'failed' ELSE 'ended' END,
           "failure" = CASE WHEN "state" = 'pending' THEN 'cancelled' ELSE NULL END,
           "state_reason" = 'its instance was deleted', "holds_instance_state" = NULL, "deleted_at" = now()
         WHERE "instance_id" = $1 AND "holds_instance_state" IS NOT NULL`,
        [id],
      );
      return this.store.transition(id, [instance.state], 'deleting', 'deleted through the API', {}, manager);
    });
    if (moved) {
      await this.queues.delete({ instanceId: id }).catch((error: unknown) => {
        this.logger.warn(`instance ${id}: delete job not queued (the monitor will retry): ${String(error)}`);
      });
    }
    return this.get(id);
  }

  async ports(includeFree: boolean): Promise<{ range: { from: number; to: number }; hosts: object[]; ports: Port[] }> {
    const [from, to] = this.config.limits.portRange;
    const ports = await this.dataSource.getRepository(Port).find({
      where: includeFree ? {} : { instanceId: Not(IsNull()) },
      order: { host: 'ASC', number: 'ASC' },
    });
    const counts = await this.capacity.loads();
    return {
      range: { from, to },
      hosts: counts.map((load) => ({ host: load.host, size: to - from + 1, free: load.freePorts, used: to - from + 1 - load.freePorts })),
      ports,
    };
  }

  async details(): Promise<object> {
    const loads = await this.capacity.loads();
    const instanceCounts = (await this.dataSource.query(
      `SELECT "state", count(*)::int AS "count" FROM "instance" GROUP BY "state"`,
    )) as { state: string; count: number }[];
    const allocationCounts = (await this.dataSource.query(
      `SELECT "state", count(*)::int AS "count" FROM "allocation" GROUP BY "state"`,
    )) as { state: string; count: number }[];
    const limits = this.config.limits;
    return {
      limits: {
        maxInstances: limits.maxInstances,
        maxHostMemoryPercent: limits.maxHostMemoryPercent,
        maxHostCpuPercent: limits.maxHostCpuPercent,
        portRange: { from: limits.portRange[0], to: limits.portRange[1] },
        portsPerInstance: this.capacity.portsPerInstance,
      },
      pool: { minIdle: this.config.pool.minIdle, hotSpares: this.config.pool.hotSpares },
      hosts: loads.map((load) => ({
        name: load.host,
        instances: load.live,
        freePorts: load.freePorts,
        canCreate: this.capacity.refusal(load) === null,
        refusal: this.capacity.refusal(load),
        usage: load.status
          ? {
              reachable: load.status.reachable,
              memoryUsedPercent: Number(load.status.memoryUsedPercent.toFixed(1)),
              cpuUsedPercent: Number(load.status.cpuUsedPercent.toFixed(1)),
              memoryTotalBytes: load.status.memoryTotalBytes,
              sampledAt: load.status.sampledAt,
              error: load.status.error,
            }
          : null,
      })),
      instances: Object.fromEntries(instanceCounts.map((row) => [row.state, row.count])),
      allocations: Object.fromEntries(allocationCounts.map((row) => [row.state, row.count])),
    };
  }
}
