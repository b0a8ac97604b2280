import { Injectable, Logger } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { DataSource } from 'typeorm';

/**
 * Leader election through a lease row in Postgres: a worker holds the named lease while it keeps
 * renewing it; when it dies the lease runs out and another worker takes it. No extra component.
 */
@Injectable()
export class LeaderElectionService {
  private readonly logger = new Logger(LeaderElectionService.name);
  readonly identity = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  private leading = new Set<string>();

  constructor(private readonly dataSource: DataSource) {}

  /** Takes or renews the lease; true while this process is the leader. */
  async acquire(name: string, leaseMs: number): Promise<boolean> {
    let leader = false;
    try {
      const rows = (await this.dataSource.query(
        `INSERT INTO "leader_lease" ("name", "holder", "expires_at") VALUES ($1, $2, now() + make_interval(secs => $3::float8 / 1000))
         ON CONFLICT ("name") DO UPDATE SET "holder" = EXCLUDED."holder", "expires_at" = EXCLUDED."expires_at"
         WHERE "leader_lease"."holder" = EXCLUDED."holder" OR "leader_lease"."expires_at" < now()
         RETURNING "holder"`,
        [name, this.identity, leaseMs],
      )) as { holder: string }[];
      leader = rows.length > 0;
    } catch (error) {
      this.logger.warn(`lease ${name}: ${error instanceof Error ? error.message : String(error)}`);
    }
    if (leader && !this.leading.has(name)) this.logger.log(`now the ${name} leader (${this.identity})`);
    if (!leader && this.leading.has(name)) this.logger.log(`no longer the ${name} leader`);
    if (leader) this.leading.add(name);
    else this.leading.delete(name);
    return leader;
  }

  async release(name: string): Promise<void> {
    this.leading.delete(name);
    await this.dataSource
      .query(`DELETE FROM "leader_lease" WHERE "name" = $1 AND "holder" = $2`, [name, this.identity])
      .catch(() => undefined);
  }
}
