import { Injectable } from '@nestjs/common';
import { DataSource, EntityManager, QueryRunner } from 'typeorm';
import { ServiceUnavailableError } from '../common/errors';
import { CachedFile } from './cached-file.entity';

/** First key of the advisory locks on file URLs (ASCII "file"); the second is hashtext(url). */
const LOCK_NAMESPACE = 0x66696c65;
const LOCK_POLL_MS = 100;

export type NewCachedFile = Omit<CachedFile, 'id'>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Rows of cached files, and the cross-process lock that makes one process at a time fetch a URL. */
@Injectable()
export class CachedFileStore {
  constructor(private readonly dataSource: DataSource) {}

  findByUrl(url: string, manager: EntityManager = this.dataSource.manager): Promise<CachedFile | null> {
    return manager.getRepository(CachedFile).findOneBy({ url });
  }

  findByLocalName(localName: string): Promise<CachedFile | null> {
    return this.dataSource.getRepository(CachedFile).findOneBy({ localName });
  }

  list(): Promise<CachedFile[]> {
    return this.dataSource.getRepository(CachedFile).find({ order: { id: 'ASC' } });
  }

  async insert(values: NewCachedFile, manager: EntityManager = this.dataSource.manager): Promise<CachedFile> {
    const repository = manager.getRepository(CachedFile);
    return repository.save(repository.create(values));
  }

  /** Deletes the row; false when it was already gone. */
  async remove(id: number, manager: EntityManager = this.dataSource.manager): Promise<boolean> {
    const result = await manager.getRepository(CachedFile).delete({ id });
    return (result.affected ?? 0) > 0;
  }

  /**
   * Runs `work` holding a session advisory lock keyed on the URL, so that processes sharing the
   * state store fetch a URL one at a time. Waits at most `waitMs` for the lock (polling, so no
   * statement timeout cuts the wait); a session lock, not a transaction, because a download may
   * outlast the idle-in-transaction timeout. `work` gets the locked connection's manager: queries
   * through it need no second connection from the pool, so many downloads at once cannot starve it.
   */
  async withUrlLock<T>(url: string, waitMs: number, work: (manager: EntityManager) => Promise<T>): Promise<T> {
    const runner = this.dataSource.createQueryRunner();
    await runner.connect();
    let locked = false;
    try {
      const deadline = Date.now() + waitMs;
      for (;;) {
        const [row] = (await runner.query('SELECT pg_try_advisory_lock($1, hashtext($2)) AS "locked"', [LOCK_NAMESPACE, url])) as { locked: boolean }[];
        locked = row.locked;
        if (locked) break;
        if (Date.now() >= deadline) throw new ServiceUnavailableError(`another download of ${url} is still running`, 2);
        await sleep(LOCK_POLL_MS);
      }
      return await work(runner.manager);
    } finally {
      await this.unlockAndRelease(runner, url, locked);
    }
  }

  private async unlockAndRelease(runner: QueryRunner, url: string, locked: boolean): Promise<void> {
    if (!locked) {
      await runner.release();
      return;
    }
    try {
      await runner.query('SELECT pg_advisory_unlock($1, hashtext($2))', [LOCK_NAMESPACE, url]);
      await runner.release();
    } catch (error) {
      // The lock may still be held by this session: close the connection instead of pooling it.
      const postgres = runner as QueryRunner & { releasePostgresConnection?: (reason: Error) => Promise<void> };
      if (postgres.releasePostgresConnection) await postgres.releasePostgresConnection(error instanceof Error ? error : new Error(String(error)));
      else await runner.release();
    }
  }
}
