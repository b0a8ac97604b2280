import { Injectable } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { Instance } from './instance.entity';
import { InstanceState } from './instance-state';

export interface TransitionExtras {
  dockerId?: string | null;
  hot?: boolean;
  loadedFile?: string | null;
  readyAt?: 'now' | null;
  restartCount?: number | 'increment';
  nextRestartAt?: Date | null;
  allocationCount?: 'increment';
}

/**
 * Instance rows and their guarded state changes. A change names the states it may start from, so a
 * job that runs twice, or races the monitor, finds the row already moved and changes nothing.
 * The reason is stored with the state and copied to the history by a trigger.
 */
@Injectable()
export class InstanceStore {
  constructor(private readonly dataSource: DataSource) {}

  /**
   * How many instances are idle or on their way into the pool (being released, created or started,
   * and not stuck): an allocation that found none idle at the instance limit tries again while
   * there are any (one may have been pooled since it looked).
   */
  async idleOrComingBack(): Promise<number> {
    const [{ count }] = (await this.dataSource.query(
      `SELECT count(*)::int AS "count" FROM "instance"
       WHERE "state" = 'idle'
          OR ("state" IN ('releasing', 'creating', 'starting') AND "state_changed_at" > now() - interval '10 seconds')`,
    )) as { count: number }[];
    return count;
  }

  find(id: number, manager: EntityManager = this.dataSource.manager): Promise<Instance | null> {
    return manager.getRepository(Instance).findOneBy({ id });
  }

  /** Moves the instance from one of `from` to `to`; returns false when it was not in one of `from`. */
  async transition(
    id: number,
    from: readonly InstanceState[],
    to: InstanceState,
    reason: string,
    extras: TransitionExtras = {},
    manager: EntityManager = this.dataSource.manager,
  ): Promise<boolean> {
    const sets = [`"state" = $3`, `"state_reason" = $4`];
    const params: unknown[] = [id, from, to, reason.slice(0, 2000)];
    const set = (column: string, value: unknown) => {
      params.push(value);
      sets.push(`"${column}" = $${params.length}`);
    };
    if (extras.dockerId !== undefined) set('docker_id', extras.dockerId);
    if (extras.hot !== undefined) set('hot', extras.hot);
    if (extras.loadedFile !== undefined) set('loaded_file', extras.loadedFile);
    if (extras.readyAt === 'now') sets.push(`"ready_at" = now()`);
    else if (extras.readyAt === null) sets.push(`"ready_at" = NULL`);
    if (extras.restartCount === 'increment') sets.push(`"restart_count" = "restart_count" + 1`);
    else if (extras.restartCount !== undefined) set('restart_count', extras.restartCount);
    if (extras.nextRestartAt !== undefined) set('next_restart_at', extras.nextRestartAt);
    if (extras.allocationCount === 'increment') sets.push(`"allocation_count" = "allocation_count" + 1`);
    sets.push(to === 'deleted' ? `"deleted_at" = now()` : `"deleted_at" = NULL`);
    const [, affected] = (await manager.query(
      `UPDATE "instance" SET ${sets.join(', ')} WHERE "id" = $1 AND "state" = ANY($2)`,
      params,
    )) as [unknown, number];
    return affected > 0;
  }

  /** Sets the container id while the instance is still being created. */
  async setDockerId(id: number, dockerId: string): Promise<boolean> {
    const [, affected] = (await this.dataSource.query(
      `UPDATE "instance" SET "docker_id" = $2 WHERE "id" = $1 AND "state" = 'creating'`,
      [id, dockerId],
    )) as [unknown, number];
    return affected > 0;
  }

  /** Frees the ports of a deleted instance. */
  async releasePorts(id: number, manager: EntityManager = this.dataSource.manager): Promise<void> {
    await manager.query(
      `UPDATE "port" SET "instance_id" = NULL, "purpose" = NULL, "assigned_at" = NULL WHERE "instance_id" = $1`,
      [id],
    );
  }

  /** Marks the instance deleted and frees its ports in one transaction (the caller's, if given). */
  async markDeleted(id: number, from: readonly InstanceState[], reason: string, outer?: EntityManager): Promise<boolean> {
    const work = async (manager: EntityManager) => {
      const moved = await this.transition(id, from, 'deleted', reason, {}, manager);
      if (moved) await this.releasePorts(id, manager);
      return moved;
    };
    return outer ? work(outer) : this.dataSource.transaction(work);
  }
}
