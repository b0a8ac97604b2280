import { Injectable, Logger, OnApplicationBootstrap } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { AppConfig } from '../config/app-config';
import { CapacityError } from '../common/errors';
import { HostStatus } from './host-status.entity';
import { Instance } from './instance.entity';

/** Host figures older than this are not trusted to refuse a creation (the worker re-checks fresh ones). */
const USAGE_MAX_AGE_MS = 60000;
const CAPACITY_LOCK = 0x70746d31; // one advisory lock serialises every reservation

interface HostLoad {
  host: string;
  live: number;
  freePorts: number;
  status: HostStatus | undefined;
}

/**
 * Decides whether a new instance may be created and where, and reserves it: the instance row and its
 * ports are written in one transaction under an advisory lock, so concurrent requests can never
 * exceed the instance limit or share a port.
 */
@Injectable()
export class CapacityService implements OnApplicationBootstrap {
  private readonly logger = new Logger(CapacityService.name);

  constructor(
    private readonly config: AppConfig,
    private readonly dataSource: DataSource,
  ) {}

  /** Makes the port table match the configured range on every host (free ports outside it are dropped). */
  async onApplicationBootstrap(): Promise<void> {
    const [from, to] = this.config.limits.portRange;
    for (const host of this.config.docker.hosts) {
      await this.dataSource.transaction(async (manager) => {
        await manager.query(
          `INSERT INTO "port" ("host", "number") SELECT $1, n FROM generate_series($2::int, $3::int) AS n ON CONFLICT DO NOTHING`,
          [host.name, from, to],
        );
        await manager.query(
          `DELETE FROM "port" WHERE "host" = $1 AND "instance_id" IS NULL AND ("number" < $2 OR "number" > $3)`,
          [host.name, from, to],
        );
      });
    }
    this.logger.log(`port range ${from}-${to} ready on ${this.config.docker.hosts.map((host) => host.name).join(', ')}`);
  }

  get portsPerInstance(): number {
    return Object.keys(this.config.workload.ports).length;
  }

  /** Takes the capacity lock until the end of the transaction (the lock is re-entrant). */
  async lock(manager: EntityManager): Promise<void> {
    await manager.query('SELECT pg_advisory_xact_lock($1)', [CAPACITY_LOCK]);
  }

  /**
   * Reserves `count` new instances and returns their rows, in state creating: all or none, or with
   * `upTo` as many as the limits allow (at least one).
   */
  async reserve(count: number, reason: string, outer?: EntityManager, upTo = false): Promise<Instance[]> {
    const work = async (manager: EntityManager): Promise<Instance[]> => {
      await this.lock(manager);
      const loads = await this.loads(manager);
      const created: Instance[] = [];
      for (let index = 0; index < count; index += 1) {
        if (upTo && created.length > 0 && loads.every((load) => this.refusal(load) !== null)) break;
        const host = this.place(loads);
        created.push(await this.insert(manager, host.host, reason));
        host.live += 1;
        host.freePorts -= this.portsPerInstance;
      }
      return created;
    };
    return outer ? work(outer) : this.dataSource.transaction(work);
  }

  /** Live instances, free ports and last usage of every host, read under the capacity lock. */
  async loads(manager: EntityManager = this.dataSource.manager): Promise<HostLoad[]> {
    const live = (await manager.query(
      `SELECT "host", count(*)::int AS "count" FROM "instance" WHERE "state" <> 'deleted' GROUP BY "host"`,
    )) as { host: string; count: number }[];
    const free = (await manager.query(
      `SELECT "host", count(*)::int AS "count" FROM "port" WHERE "instance_id" IS NULL GROUP BY "host"`,
    )) as { host: string; count: number }[];
    const statuses = await manager.getRepository(HostStatus).find();
    return this.config.docker.hosts.map((host) => ({
      host: host.name,
      live: live.find((row) => row.host === host.name)?.count ?? 0,
      freePorts: free.find((row) => row.host === host.name)?.count ?? 0,
      status: statuses.find((status) => status.name === host.name),
    }));
  }

  /** Why this host cannot take one more instance, or null when it can. */
  refusal(load: HostLoad): string | null {
    const limits = this.config.limits;
    if (load.live >= limits.maxInstances) {
      return `the maximum of ${limits.maxInstances} instances is reached on host ${load.host}`;
    }
    if (load.freePorts < this.portsPerInstance) {
      return `no free ports left in ${limits.portRange[0]}-${limits.portRange[1]} on host ${load.host}`;
    }
    const status = load.status;
    if (status && Date.now() - status.sampledAt.getTime() < USAGE_MAX_AGE_MS) {
      if (!status.reachable) return `Docker host ${load.host} is unreachable: ${status.error ?? 'no answer'}`;
      if (status.memoryUsedPercent > limits.maxHostMemoryPercent) {
        return `host memory use ${status.memoryUsedPercent.toFixed(1)}% on ${load.host} is above the limit of ${limits.maxHostMemoryPercent}%`;
      }
      if (status.cpuUsedPercent > limits.maxHostCpuPercent) {
        return `host CPU use ${status.cpuUsedPercent.toFixed(1)}% on ${load.host} is above the limit of ${limits.maxHostCpuPercent}%`;
      }
    }
    return null;
  }

  private place(loads: HostLoad[]): HostLoad {
    const open = loads.filter((load) => this.refusal(load) === null);
    if (open.length === 0) {
      const reasons = loads.map((load) => this.refusal(load)).join('; ');
      throw new CapacityError(`no instance can be created: ${reasons}`, this.config.allocation.retryAfterSeconds);
    }
    // pack: fill the busiest host first; spread: the least busy.
    const sorted = [...open].sort((a, b) => (this.config.docker.placement === 'pack' ? b.live - a.live : a.live - b.live));
    return sorted[0];
  }

  private async insert(manager: EntityManager, host: string, reason: string): Promise<Instance> {
    const [{ id }] = (await manager.query(`SELECT nextval(pg_get_serial_sequence('instance', 'id'))::int AS "id"`)) as {
      id: number;
    }[];
    const containerName = `${this.config.instanceNamePrefix}-${id}`;
    await manager.query(
      `INSERT INTO "instance" ("id", "state", "state_reason", "host", "container_name") VALUES ($1, 'creating', $2, $3, $4)`,
      [id, reason, host, containerName],
    );
    const ports: Record<string, number> = {};
    for (const purpose of Object.keys(this.config.workload.ports)) {
      const rows = (await manager.query(
        `UPDATE "port" SET "instance_id" = $1, "purpose" = $2, "assigned_at" = now()
         WHERE ("host", "number") = (
           SELECT "host", "number" FROM "port" WHERE "host" = $3 AND "instance_id" IS NULL
           ORDER BY "number" LIMIT 1 FOR UPDATE SKIP LOCKED)
         RETURNING "number"`,
        [id, purpose, host],
      )) as [{ number: number }[], number];
      const number = rows[0][0]?.number;
      if (number === undefined) {
        throw new CapacityError(`no free ports left on host ${host}`, this.config.allocation.retryAfterSeconds);
      }
      ports[purpose] = number;
    }
    await manager.query(`UPDATE "instance" SET "ports" = $2 WHERE "id" = $1`, [id, JSON.stringify(ports)]);
    return manager.getRepository(Instance).findOneByOrFail({ id });
  }
}
