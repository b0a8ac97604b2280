import { Injectable, Logger } from '@nestjs/common';
import { DataSource } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { CapacityError } from '../common/errors';
import { ContainerDriver } from '../container-driver/container-driver';
import { QueueProducer } from '../queues/queue.producer';
import { CapacityService } from './capacity.service';
import { Instance } from './instance.entity';

/** Keeps the idle pool at its minimum (within the limits) and the configured number of hot spares unpaused. */
@Injectable()
export class PoolService {
  private readonly logger = new Logger(PoolService.name);

  constructor(
    private readonly config: AppConfig,
    private readonly dataSource: DataSource,
    private readonly capacity: CapacityService,
    private readonly driver: ContainerDriver,
    private readonly queues: QueueProducer,
  ) {}

  async replenish(): Promise<{ created: number; warmed: number }> {
    const target = Math.max(this.config.pool.minIdle, this.config.pool.hotSpares);
    let created = 0;
    if (target > 0 && (await this.mayNeedInstances(target))) {
      let reserved: Instance[] = [];
      try {
        // The deficit is counted under the capacity lock and reserved before it is released: two
        // workers topping up at once (a monitor pass and a replenish job) cannot both fill one gap.
        reserved = await this.dataSource.transaction(async (manager) => {
          await this.capacity.lock(manager);
          const [{ count }] = (await manager.query(
            `SELECT count(*)::int AS "count" FROM "instance" WHERE "state" IN ('idle', 'creating', 'starting')`,
          )) as { count: number }[];
          const deficit = target - count;
          return deficit > 0 ? this.capacity.reserve(deficit, 'pool below its minimum', manager, true) : [];
        });
      } catch (error) {
        if (!(error instanceof CapacityError)) throw error;
        this.logger.debug?.(`pool top-up stopped: ${error.message}`);
      }
      for (const instance of reserved) {
        await this.queues.create({ instanceId: instance.id }).catch(() => undefined);
      }
      created = reserved.length;
      if (created > 0) this.logger.log(`pool top-up: creating ${created} instance(s) towards ${target} idle`);
    }
    const warmed = await this.warmHotSpares();
    return { created, warmed };
  }

  /**
   * One statement, no lock: false when the pool is full or every host is at its instance limit, so
   * the top-up asked for after each hand-out and release costs one read in the common case.
   */
  private async mayNeedInstances(target: number): Promise<boolean> {
    const [row] = (await this.dataSource.query(
      `SELECT count(*) FILTER (WHERE "state" IN ('idle', 'creating', 'starting'))::int AS "pooled",
              count(*) FILTER (WHERE "state" <> 'deleted')::int AS "total"
       FROM "instance"`,
    )) as { pooled: number; total: number }[];
    const limit = this.config.limits.maxInstances * this.config.docker.hosts.length;
    return row.pooled < target && row.total < limit;
  }

  /** Unpauses idle instances until the number of hot spares is reached. */
  private async warmHotSpares(): Promise<number> {
    let warmed = 0;
    while (this.config.pool.hotSpares > 0) {
      const done = await this.dataSource.transaction(async (manager) => {
        const [{ count }] = (await manager.query(
          `SELECT count(*)::int AS "count" FROM "instance" WHERE "state" = 'idle' AND "hot"`,
        )) as { count: number }[];
        if (count >= this.config.pool.hotSpares) return true;
        const [candidate] = (await manager.query(
          `SELECT "id", "host", "docker_id" FROM "instance" WHERE "state" = 'idle' AND NOT "hot" AND "docker_id" IS NOT NULL
           ORDER BY "id" LIMIT 1 FOR UPDATE SKIP LOCKED`,
        )) as { id: number; host: string; docker_id: string }[];
        if (!candidate) return true;
        await this.driver.unpause(candidate.host, candidate.docker_id);
        await manager.query(`UPDATE "instance" SET "hot" = true, "state_reason" = 'hot spare (unpaused)' WHERE "id" = $1`, [
          candidate.id,
        ]);
        this.logger.log(`instance ${candidate.id}: unpaused as a hot spare`);
        return false;
      });
      if (done) break;
      warmed += 1;
    }
    return warmed;
  }
}
