import { Injectable } from '@nestjs/common';
import { DataSource, EntityManager } from 'typeorm';
import { Instance } from '../instances/instance.entity';
import { Allocation } from './allocation.entity';
import { AllocationFailure } from './allocation-state';

interface AllocationRow {
  id: number;
  state: Allocation['state'];
  state_reason: string;
  failure: Allocation['failure'];
  instance_id: number | null;
  holds_instance_state: 'allocated' | null;
  file_url: string | null;
  loaded_file: string | null;
  lease_seconds: number;
  expires_at: Date | null;
  idempotency_key: string | null;
  labels: Record<string, string>;
  created_at: Date;
  activated_at: Date | null;
  deleted_at: Date | null;
}

function toAllocation(row: AllocationRow): Allocation {
  return Object.assign(new Allocation(), {
    id: row.id,
    state: row.state,
    stateReason: row.state_reason,
    failure: row.failure,
    instanceId: row.instance_id,
    holdsInstanceState: row.holds_instance_state,
    fileUrl: row.file_url,
    loadedFile: row.loaded_file,
    leaseSeconds: row.lease_seconds,
    expiresAt: row.expires_at,
    idempotencyKey: row.idempotency_key,
    labels: row.labels,
    createdAt: row.created_at,
    activatedAt: row.activated_at,
    deletedAt: row.deleted_at,
  });
}

/** An allocation row with the address columns of its instance (i_host, i_ports), from one statement. */
interface HandOutRow extends AllocationRow {
  i_host: string | null;
  i_ports: Record<string, number> | null;
}

/** What the presenter needs of an instance to give its address. */
export type InstanceAddress = Pick<Instance, 'id' | 'host' | 'ports'>;

/** An allocation as answered to its client, with the address of the instance it holds. */
export interface HandOut {
  allocation: Allocation;
  instance: InstanceAddress | null;
}

function toHandOut(row: HandOutRow): HandOut {
  const allocation = toAllocation(row);
  const instance = row.instance_id !== null && row.i_host !== null ? { id: row.instance_id, host: row.i_host, ports: row.i_ports ?? {} } : null;
  return { allocation, instance };
}

export type ClaimedInstance = Pick<Instance, 'id' | 'host' | 'dockerId' | 'ports' | 'hot'>;

/** An instance an allocation just let go of, as the closing statement returned it. */
export type ReleasingInstance = Pick<Instance, 'id' | 'allocationCount' | 'host' | 'dockerId' | 'ports'>;
export type ClaimedAllocation = Pick<Allocation, 'id' | 'fileUrl'>;

export interface NewAllocation {
  fileUrl: string | null;
  leaseSeconds: number;
  labels: Record<string, string>;
  idempotencyKey: string | null;
}

/**
 * Allocation rows and the claims that tie them to instances. Exclusivity is the database's: an idle
 * instance is taken with FOR UPDATE SKIP LOCKED, and the schema refuses a second holder or any
 * change of a held instance's state.
 */
@Injectable()
export class AllocationStore {
  constructor(private readonly dataSource: DataSource) {}

  find(id: number, manager: EntityManager = this.dataSource.manager): Promise<Allocation | null> {
    return manager.getRepository(Allocation).findOneBy({ id });
  }

  findByKey(key: string): Promise<Allocation | null> {
    return this.dataSource.getRepository(Allocation).findOneBy({ idempotencyKey: key });
  }

  /** The allocation and the instance it references, in one round trip. */
  async findWithInstance(id: number): Promise<{ allocation: Allocation; instance: Instance | null } | null> {
    const rows = (await this.dataSource
      .getRepository(Allocation)
      .createQueryBuilder('allocation')
      .leftJoinAndSelect('allocation.instance', 'instance')
      .where('allocation.id = :id', { id })
      .getOne()) as (Allocation & { instance?: Instance | null }) | null;
    if (!rows) return null;
    const { instance, ...allocation } = rows;
    return { allocation: allocation as Allocation, instance: instance ?? null };
  }

  /**
   * The hot path, one statement: take an unpaused idle spare and create the allocation already
   * active on it. No engine call: the spare was reset when it went back to the pool.
   */
  async claimHotSpare(input: NewAllocation): Promise<HandOut | null> {
    const [row] = (await this.dataSource.query(
      `WITH n AS (
         SELECT nextval(pg_get_serial_sequence('allocation', 'id'))::int AS "id"
       ), i AS (
         SELECT "id", "loaded_file" FROM "instance" WHERE "state" = 'idle' AND "hot" ORDER BY "id" LIMIT 1 FOR UPDATE SKIP LOCKED
       ), ui AS (
         UPDATE "instance" SET "state" = 'allocated', "state_reason" = 'in use by allocation ' || n."id"::text || ' (hot spare)',
           "hot" = false, "allocation_count" = "allocation_count" + 1
         FROM i, n WHERE "instance"."id" = i."id"
         RETURNING "instance"."id", "instance"."host", "instance"."ports"
       ), a AS (
         INSERT INTO "allocation" ("id", "state", "state_reason", "file_url", "lease_seconds", "labels", "idempotency_key",
           "instance_id", "holds_instance_state", "loaded_file", "activated_at", "expires_at")
         SELECT n."id", 'active', 'instance ' || i."id"::text || ' handed out (hot spare)', $1, $2, $3, $4,
           i."id", 'allocated', i."loaded_file", now(), now() + make_interval(secs => $2::int)
         FROM n, i
         RETURNING *
       )
       SELECT a.*, ui."host" AS "i_host", ui."ports" AS "i_ports" FROM a, ui`,
      [input.fileUrl, input.leaseSeconds, JSON.stringify(input.labels), input.idempotencyKey],
    )) as HandOutRow[];
    return row ? toHandOut(row) : null;
  }

  /**
   * The warm path's first half, one statement: the new allocation (pending) already holding an idle
   * instance when there is one, so the worker goes straight to unpausing it. With no idle instance
   * the allocation is inserted alone and the worker takes the cold path.
   */
  async insertClaiming(input: NewAllocation): Promise<{ allocation: Allocation; claimed: ClaimedInstance | null }> {
    const [row] = (await this.dataSource.query(
      `WITH n AS (
         SELECT nextval(pg_get_serial_sequence('allocation', 'id'))::int AS "id"
       ), i AS (
         SELECT "id" FROM "instance" WHERE "state" = 'idle' ORDER BY "hot" DESC, "id" LIMIT 1 FOR UPDATE SKIP LOCKED
       ), ui AS (
         UPDATE "instance" SET "state" = 'allocated', "state_reason" = 'claimed by allocation ' || n."id"::text
         FROM i, n WHERE "instance"."id" = i."id"
         RETURNING "instance"."id", "instance"."host", "instance"."docker_id", "instance"."ports", "instance"."hot"
       ), a AS (
         INSERT INTO "allocation" ("id", "state", "state_reason", "file_url", "lease_seconds", "labels", "idempotency_key",
           "instance_id", "holds_instance_state")
         SELECT n."id", 'pending', CASE WHEN i."id" IS NULL THEN 'requested' ELSE 'preparing instance ' || i."id"::text END,
           $1, $2, $3, $4, i."id", CASE WHEN i."id" IS NULL THEN NULL ELSE 'allocated' END
         FROM n LEFT JOIN i ON true
         RETURNING *
       )
       SELECT a.*, ui."host" AS "i_host", ui."ports" AS "i_ports", ui."docker_id" AS "i_docker_id", ui."hot" AS "i_hot"
       FROM a LEFT JOIN ui ON ui."id" = a."instance_id"`,
      [input.fileUrl, input.leaseSeconds, JSON.stringify(input.labels), input.idempotencyKey],
    )) as (HandOutRow & { i_docker_id: string | null; i_hot: boolean | null })[];
    const allocation = toAllocation(row);
    const claimed =
      row.instance_id === null || row.i_host === null
        ? null
        : { id: row.instance_id, host: row.i_host, dockerId: row.i_docker_id, ports: row.i_ports ?? {}, hot: row.i_hot ?? false };
    return { allocation, claimed };
  }

  /** True while the allocation is pending and holds this instance: a job may go on preparing it. */
  async holds(allocationId: number, instanceId: number): Promise<boolean> {
    const rows = (await this.dataSource.query(
      `SELECT 1 FROM "allocation" WHERE "id" = $1 AND "state" = 'pending' AND "instance_id" = $2 AND "holds_instance_state" = 'allocated'`,
      [allocationId, instanceId],
    )) as unknown[];
    return rows.length > 0;
  }

  /**
   * Ties a pending allocation to an idle instance (hot spares first) and marks the instance
   * allocated. Returns the instance, or null when no idle instance is free. An allocation that
   * already holds an instance (a job re-run after a crash) gets that one back.
   */
  async claimIdle(allocationId: number): Promise<{ allocation: ClaimedAllocation; instance: ClaimedInstance } | 'not-pending' | null> {
    // Fast path, one statement (atomic on its own): lock the pending allocation, take an idle
    // instance skipping locked ones, mark it allocated and tie it to the allocation.
    const [fast] = (await this.dataSource.query(
      `WITH a AS (
         SELECT "id" FROM "allocation" WHERE "id" = $1 AND "state" = 'pending' AND "instance_id" IS NULL FOR UPDATE
       ), i AS (
         SELECT "instance"."id" FROM "instance", a WHERE "instance"."state" = 'idle'
         ORDER BY "instance"."hot" DESC, "instance"."id" LIMIT 1 FOR UPDATE OF "instance" SKIP LOCKED
       ), ui AS (
         UPDATE "instance" SET "state" = 'allocated', "state_reason" = 'claimed by allocation ' || $1::text
         FROM i WHERE "instance"."id" = i."id"
         RETURNING "instance"."id", "instance"."host", "instance"."docker_id", "instance"."ports", "instance"."hot"
       ), ua AS (
         UPDATE "allocation" SET "instance_id" = ui."id", "holds_instance_state" = 'allocated',
           "state_reason" = 'preparing instance ' || ui."id"::text
         FROM ui WHERE "allocation"."id" = $1
         RETURNING "allocation"."id", "allocation"."file_url"
       )
       SELECT ui."id", ui."host", ui."docker_id", ui."ports", ui."hot", ua."file_url" FROM ui, ua`,
      [allocationId],
    )) as { id: number; host: string; docker_id: string | null; ports: Record<string, number>; hot: boolean; file_url: string | null }[];
    if (fast) {
      return {
        allocation: { id: allocationId, fileUrl: fast.file_url },
        instance: { id: fast.id, host: fast.host, dockerId: fast.docker_id, ports: fast.ports, hot: fast.hot },
      };
    }
    // Slow path: the allocation is gone or settled, already holds an instance (a job re-run after a
    // crash gets that one back), or no idle instance is free.
    return this.dataSource.transaction(async (manager) => {
      const [allocation] = (await manager.query(
        `SELECT "id", "state", "instance_id", "file_url" FROM "allocation" WHERE "id" = $1 FOR UPDATE`,
        [allocationId],
      )) as { id: number; state: string; instance_id: number | null; file_url: string | null }[];
      if (!allocation || allocation.state !== 'pending') return 'not-pending';
      let instanceId = allocation.instance_id;
      if (instanceId === null) {
        const [candidate] = (await manager.query(
          `SELECT "id" FROM "instance" WHERE "state" = 'idle' ORDER BY "hot" DESC, "id" LIMIT 1 FOR UPDATE SKIP LOCKED`,
        )) as { id: number }[];
        if (!candidate) return null;
        await this.hold(manager, allocationId, candidate.id, ['idle']);
        instanceId = candidate.id;
      }
      const instance = await manager.getRepository(Instance).findOneByOrFail({ id: instanceId });
      return { allocation: { id: allocationId, fileUrl: allocation.file_url }, instance };
    });
  }

  /** Ties a pending allocation to an instance the allocation itself just created (cold path). */
  async claimFresh(allocationId: number, instanceId: number): Promise<boolean> {
    return this.dataSource.transaction(async (manager) => {
      const [allocation] = (await manager.query(`SELECT "state" FROM "allocation" WHERE "id" = $1 FOR UPDATE`, [allocationId])) as {
        state: string;
      }[];
      if (allocation?.state !== 'pending') return false;
      return this.hold(manager, allocationId, instanceId, ['starting']);
    });
  }

  private async hold(manager: EntityManager, allocationId: number, instanceId: number, from: string[]): Promise<boolean> {
    const [, moved] = (await manager.query(
      `UPDATE "instance" SET "state" = 'allocated', "state_reason" = $2 WHERE "id" = $1 AND "state" = ANY($3)`,
      [instanceId, `claimed by allocation ${allocationId}`, from],
    )) as [unknown, number];
    if (moved === 0) return false;
    await manager.query(
      `UPDATE "allocation" SET "instance_id" = $2, "holds_instance_state" = 'allocated', "state_reason" = $3 WHERE "id" = $1`,
      [allocationId, instanceId, `preparing instance ${instanceId}`],
    );
    return true;
  }

  /**
   * pending -> active once the instance is ready, in one statement that also records the hand-out
   * on the instance. Returns the active allocation with its instance's address, or null when the
   * allocation stopped waiting meanwhile.
   */
  async activate(allocationId: number, instanceId: number, loadedFile: string | null): Promise<HandOut | null> {
    const [row] = (await this.dataSource.query(
      `WITH ua AS (
         UPDATE "allocation" SET "state" = 'active', "state_reason" = 'instance ' || $2::text || ' handed out',
           "loaded_file" = $3, "activated_at" = now(), "expires_at" = now() + make_interval(secs => "lease_seconds")
         WHERE "id" = $1 AND "state" = 'pending' AND "instance_id" = $2 AND "holds_instance_state" = 'allocated'
         RETURNING *
       ), ui AS (
         UPDATE "instance" SET "state_reason" = 'in use by allocation ' || $1::text, "hot" = false, "loaded_file" = $3,
           "allocation_count" = "allocation_count" + 1
         FROM ua WHERE "instance"."id" = ua."instance_id"
         RETURNING "instance"."host", "instance"."ports"
       )
       SELECT ua.*, ui."host" AS "i_host", ui."ports" AS "i_ports" FROM ua, ui`,
      [allocationId, instanceId, loadedFile],
    )) as HandOutRow[];
    return row ? toHandOut(row) : null;
  }

  /**
   * A claimed instance failed to prepare: the allocation lets go of it (still pending, to try
   * another) and the instance goes to error, in one transaction.
   */
  async dropFailedInstance(allocationId: number, instanceId: number, reason: string, to: 'error' | 'releasing' = 'error'): Promise<void> {
    await this.dataSource.transaction(async (manager) => {
      await manager.query(
        `UPDATE "allocation" SET "instance_id" = NULL, "holds_instance_state" = NULL, "state_reason" = $3
         WHERE "id" = $1 AND "instance_id" = $2 AND "state" = 'pending'`,
        [allocationId, instanceId, `instance ${instanceId} failed, trying another`],
      );
      await manager.query(
        `UPDATE "instance" SET "state" = $3, "state_reason" = $2 WHERE "id" = $1 AND "state" = 'allocated'
           AND NOT EXISTS (SELECT 1 FROM "allocation" WHERE "instance_id" = $1 AND "holds_instance_state" IS NOT NULL)`,
        [instanceId, reason.slice(0, 2000), to],
      );
    });
  }

  /** pending -> failed; the instance it may hold is let go (left allocated, to be released by its owner). */
  async fail(allocationId: number, failure: AllocationFailure, reason: string): Promise<boolean> {
    const [, changed] = (await this.dataSource.query(
      `UPDATE "allocation" SET "state" = 'failed', "failure" = $2, "state_reason" = $3, "holds_instance_state" = NULL,
         "deleted_at" = now() WHERE "id" = $1 AND "state" = 'pending'`,
      [allocationId, failure, reason.slice(0, 2000)],
    )) as [unknown, number];
    return changed > 0;
  }

  /**
   * Ends an open allocation (active -> ended/expired, pending -> failed) and, when it held an
   * instance, moves the instance to releasing in the same transaction. Returns the instance to
   * release, if any.
   */
  async close(
    allocationId: number,
    to: 'ended' | 'expired',
    reason: string,
    manager?: EntityManager,
  ): Promise<{ closed: boolean; releaseInstance: ReleasingInstance | null }> {
    // One statement: lock the open allocation, end it (a pending one fails as cancelled) and move the
    // instance it held to releasing. An expiry re-checks the lease, so a renewal that landed first wins.
    const rows = (await (manager ?? this.dataSource.manager).query(
      `WITH a AS (
         SELECT "id", "state", "instance_id" FROM "allocation"
         WHERE "id" = $1 AND "state" IN ('active', 'pending') AND ($2 <> 'expired' OR "expires_at" < now())
         FOR UPDATE
       ), ua AS (
         UPDATE "allocation" SET
           "state" = CASE WHEN a."state" = 'pending' THEN 'failed' ELSE $2 END,
           "failure" = CASE WHEN a."state" = 'pending' THEN 'cancelled' ELSE "allocation"."failure" END,
           "state_reason" = $3, "holds_instance_state" = NULL, "deleted_at" = now()
         FROM a WHERE "allocation"."id" = a."id"
         RETURNING a."state" AS "was", a."instance_id"
       ), ui AS (
         UPDATE "instance" SET "state" = 'releasing', "state_reason" = $4
         FROM ua WHERE "instance"."id" = ua."instance_id" AND ua."was" = 'active' AND "instance"."state" = 'allocated'
         RETURNING "instance"."id", "instance"."allocation_count", "instance"."host", "instance"."docker_id", "instance"."ports"
       )
       SELECT ua."was", ui."id", ui."allocation_count", ui."host", ui."docker_id", ui."ports" FROM ua LEFT JOIN ui ON true`,
      [allocationId, to, reason, `${to === 'expired' ? 'lease expired' : 'released'} by allocation ${allocationId}`],
    )) as {
      was: string;
      id: number | null;
      allocation_count: number | null;
      host: string | null;
      docker_id: string | null;
      ports: Record<string, number> | null;
    }[];
    const [row] = rows;
    if (!row) return { closed: false, releaseInstance: null };
    const released =
      row.id !== null && row.allocation_count !== null && row.host !== null
        ? { id: row.id, allocationCount: row.allocation_count, host: row.host, dockerId: row.docker_id, ports: row.ports ?? {} }
        : null;
    return { closed: true, releaseInstance: released };
  }

  /** Ids of active allocations whose lease has run out. */
  async dueForExpiry(limit = 100): Promise<number[]> {
    const rows = (await this.dataSource.query(
      `SELECT "id" FROM "allocation" WHERE "state" = 'active' AND "expires_at" < now() ORDER BY "expires_at" LIMIT $1`,
      [limit],
    )) as { id: number }[];
    return rows.map((row) => row.id);
  }

  async renew(allocationId: number, seconds: number): Promise<boolean> {
    const [, changed] = (await this.dataSource.query(
      `UPDATE "allocation" SET "lease_seconds" = $2, "expires_at" = now() + make_interval(secs => $2::int)
       WHERE "id" = $1 AND "state" = 'active'`,
      [allocationId, seconds],
    )) as [unknown, number];
    return changed > 0;
  }

  /**
   * Instances marked allocated that no open allocation holds (their allocation failed or was
   * cancelled while they were being prepared): back to releasing, to be reset and pooled.
   */
  async orphanedAllocated(): Promise<{ id: number; allocationCount: number }[]> {
    const [rows] = (await this.dataSource.query(
      `UPDATE "instance" SET "state" = 'releasing', "state_reason" = 'no allocation holds it'
       WHERE "state" = 'allocated' AND "state_changed_at" < now() - interval '2 seconds'
         AND NOT EXISTS (SELECT 1 FROM "allocation" a WHERE a."instance_id" = "instance"."id" AND a."holds_instance_state" IS NOT NULL)
       RETURNING "id", "allocation_count"`,
    )) as [{ id: number; allocation_count: number }[], number];
    return rows.map((row) => ({ id: row.id, allocationCount: row.allocation_count }));
  }

  /** One instance left allocated with no holder goes to releasing; returns its allocation count, or null. */
  async releaseIfUnheld(instanceId: number, reason: string, manager: EntityManager = this.dataSource.manager): Promise<number | null> {
    const [rows] = (await manager.query(
      `UPDATE "instance" SET "state" = 'releasing', "state_reason" = $2
       WHERE "id" = $1 AND "state" = 'allocated'
         AND NOT EXISTS (SELECT 1 FROM "allocation" a WHERE a."instance_id" = $1 AND a."holds_instance_state" IS NOT NULL)
       RETURNING "allocation_count"`,
      [instanceId, reason],
    )) as [{ allocation_count: number }[], number];
    return rows[0]?.allocation_count ?? null;
  }
}
