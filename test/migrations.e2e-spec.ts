import 'reflect-metadata';
import { DataSource } from 'typeorm';
import { dataSourceOptions } from '../src/database/data-source-options';
import { testEnv } from './support/env';
import { resetState } from './support/harness';

const tables = async (dataSource: DataSource): Promise<string[]> =>
  ((await dataSource.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`)) as { tablename: string }[]).map(
    (row) => row.tablename,
  );

describe('migrations', () => {
  let dataSource: DataSource;

  beforeAll(async () => {
    await resetState();
    dataSource = new DataSource(dataSourceOptions(testEnv().DATABASE_URL!));
    await dataSource.initialize();
  });

  afterAll(async () => {
    await dataSource.destroy();
  });

  it('reverts to an empty schema and runs up again', async () => {
    expect(await tables(dataSource)).toEqual(
      ['allocation', 'cached_file', 'host_status', 'instance', 'leader_lease', 'migrations', 'port', 'state_change'],
    );
    while ((await dataSource.query(`SELECT count(*)::int AS n FROM migrations`))[0].n > 0) {
      await dataSource.undoLastMigration({ transaction: 'each' });
    }
    expect(await tables(dataSource)).toEqual(['migrations']);
    const ran = await dataSource.runMigrations({ transaction: 'each' });
    expect(ran.length).toBeGreaterThan(0);
    expect(await tables(dataSource)).toContain('allocation');
    expect(await dataSource.showMigrations()).toBe(false);
  });

  describe('constraints that protect the invariants', () => {
    const instance = async (state = 'idle'): Promise<number> => {
      const [row] = await dataSource.query(
        `INSERT INTO instance (state, state_reason, host, container_name) VALUES ($1, 'test', 'local', 'c-' || gen_random_uuid()) RETURNING id`,
        [state],
      );
      return row.id;
    };
    const allocation = async (instanceId: number, state = 'active'): Promise<number> => {
      const [row] = await dataSource.query(
        `INSERT INTO allocation (state, instance_id, holds_instance_state, lease_seconds, activated_at)
         VALUES ($1, $2, 'allocated', 60, now()) RETURNING id`,
        [state, instanceId],
      );
      return row.id;
    };

    it('refuses a second open allocation on one instance', async () => {
      const id = await instance('allocated');
      await allocation(id);
      await expect(allocation(id)).rejects.toThrow(/allocation_one_holder_per_instance/);
    });

    it('refuses an open allocation on an instance that is not allocated', async () => {
      const id = await instance('idle');
      await expect(allocation(id)).rejects.toThrow(/allocation_held_instance_fk/);
    });

    it('refuses to move a held instance out of allocated until its allocation ends', async () => {
      const id = await instance('allocated');
      const held = await allocation(id);
      await expect(dataSource.query(`UPDATE instance SET state = 'idle' WHERE id = $1`, [id])).rejects.toThrow(/allocation_holds_check/);
      await dataSource.query(
        `UPDATE allocation SET state = 'ended', holds_instance_state = NULL, deleted_at = now() WHERE id = $1`,
        [held],
      );
      await dataSource.query(`UPDATE instance SET state = 'idle' WHERE id = $1`, [id]);
      const [row] = await dataSource.query(`SELECT state FROM instance WHERE id = $1`, [id]);
      expect(row.state).toBe('idle');
    });

    it('refuses unknown states, two holders of a port and a deleted instance without deletedAt', async () => {
      await expect(instance('flying')).rejects.toThrow(/instance_state_check/);
      await expect(instance('deleted')).rejects.toThrow(/instance_deleted_at_check/);
      const id = await instance('creating');
      await dataSource.query(`INSERT INTO port (host, number) VALUES ('local', 1234)`);
      await dataSource.query(`UPDATE port SET instance_id = $1, purpose = 'ipc', assigned_at = now() WHERE number = 1234`, [id]);
      await expect(
        dataSource.query(`INSERT INTO port (host, number, instance_id, purpose, assigned_at) VALUES ('local', 1234, $1, 'vnc', now())`, [id]),
      ).rejects.toThrow(/port_pkey/);
    });

    it('records every state change with its reason', async () => {
      const id = await instance('creating');
      await dataSource.query(`UPDATE instance SET state = 'starting', state_reason = 'container started' WHERE id = $1`, [id]);
      await dataSource.query(`UPDATE instance SET state = 'error', state_reason = 'probe failed' WHERE id = $1`, [id]);
      const history = await dataSource.query(
        `SELECT from_state, to_state, reason FROM state_change WHERE instance_id = $1 ORDER BY id`,
        [id],
      );
      expect(history).toEqual([
        { from_state: null, to_state: 'creating', reason: 'test' },
        { from_state: 'creating', to_state: 'starting', reason: 'container started' },
        { from_state: 'starting', to_state: 'error', reason: 'probe failed' },
      ]);
    });
  });
});
