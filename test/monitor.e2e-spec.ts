import request from 'supertest';
import { DataSource } from 'typeorm';
import { INSTANCE_LABEL, OWNER_LABEL } from '../src/container-driver/container-driver';
import { dataSourceOptions } from '../src/database/data-source-options';
import { LeaderElectionService } from '../src/health/leader-election.service';
import { PoolService } from '../src/instances/pool.service';
import { PORT_BASE, TEST_NAMESPACE, testEnv } from './support/env';
import { docker, eventually, Harness, sleep, startService } from './support/harness';

describe('monitor', () => {
  it('elects exactly one leader among several workers, and another takes over when its lease runs out', async () => {
    const dataSource = new DataSource(dataSourceOptions(testEnv().DATABASE_URL!));
    await dataSource.initialize();
    try {
      await dataSource.query(`DELETE FROM leader_lease WHERE name = 'test-lease'`);
      const workers = [0, 1, 2].map(() => new LeaderElectionService(dataSource));
      const first = await Promise.all(workers.map((worker) => worker.acquire('test-lease', 800)));
      expect(first.filter(Boolean)).toHaveLength(1);
      const leader = first.indexOf(true);
      // The leader renews; the others keep failing while it does.
      expect(await workers[leader].acquire('test-lease', 800)).toBe(true);
      expect(await workers[(leader + 1) % 3].acquire('test-lease', 800)).toBe(false);
      await sleep(1000);
      const next = (leader + 1) % 3;
      expect(await workers[next].acquire('test-lease', 800)).toBe(true);
      expect(await workers[leader].acquire('test-lease', 800)).toBe(false);
    } finally {
      await dataSource.destroy();
    }
  });

  describe('on demand', () => {
    let service: Harness;

    beforeAll(async () => {
      service = await startService({ MONITOR_ENABLED: 'false', MAX_INSTANCES: '3' });
    });

    afterAll(async () => {
      await service.close();
    });

    it('runs a pass through POST /admin/monitor and reports its repairs', async () => {
      const { body: instance } = await request(service.url).post('/instances?wait=true').expect(201);
      const stray = await docker.createContainer({
        Image: service.config.workload.image,
        name: `${TEST_NAMESPACE}-by-hand`,
        Labels: { [OWNER_LABEL]: TEST_NAMESPACE, [INSTANCE_LABEL]: '31337' },
        Env: ['PT_BIND=127.0.0.1', `PT_PORT=${PORT_BASE + 995}`, 'VNC_PORT=0'],
        HostConfig: { NetworkMode: 'host' },
      });
      await stray.start();
      // An idle container found running is paused again.
      await docker.getContainer(instance.dockerId).unpause();
      const { body: report } = await request(service.url).post('/admin/monitor').expect(200);
      expect(report.durationMs).toEqual(expect.any(Number));
      expect(report.repairs).toEqual(
        expect.arrayContaining([expect.stringMatching(/removed container .* that no instance owns/), expect.stringMatching(/idle but running, paused again/)]),
      );
      await expect(stray.inspect()).rejects.toMatchObject({ statusCode: 404 });
      expect((await docker.getContainer(instance.dockerId).inspect()).State.Paused).toBe(true);
      const quiet = await request(service.url).post('/admin/monitor').expect(200);
      expect(quiet.body.repairs).toEqual([]);
    });

    it('restarts an instance in error with backoff, then deletes it when the budget is spent', async () => {
      const { body: instance } = await request(service.url).post('/instances?wait=true').expect(201);
      await service.dataSource.query(`UPDATE instance SET state = 'error', state_reason = 'test: broken' WHERE id = $1`, [instance.id]);
      await request(service.url).post('/admin/monitor').expect(200);
      await eventually(async () => (await request(service.url).get(`/instances/${instance.id}`)).body.state === 'idle', 20000, 'restarted');
      const history = (await request(service.url).get(`/instances/${instance.id}/history`)).body as { toState: string; reason: string }[];
      expect(history.map((change) => change.toState)).toEqual(['creating', 'starting', 'idle', 'error', 'starting', 'idle']);
      expect(history[4].reason).toMatch(/restarted \(attempt 1 of 3\)/);
      await service.dataSource.query(`UPDATE instance SET state = 'error', state_reason = 'test: hopeless', restart_count = 3 WHERE id = $1`, [instance.id]);
      await request(service.url).post('/admin/monitor').expect(200);
      const deleted = await eventually(async () => {
        const { body } = await request(service.url).get(`/instances/${instance.id}`);
        return body.state === 'deleted' ? body : undefined;
      }, 20000, 'deleted');
      expect(deleted.stateReason).toMatch(/gave up after 3 restart\(s\): test: hopeless/);
      await expect(docker.getContainer(instance.dockerId).inspect()).rejects.toMatchObject({ statusCode: 404 });
    });
  });

  it('tops the pool up once when several workers do it at the same time: the deficit is counted under the capacity lock', async () => {
    const service = await startService({ MAX_INSTANCES: '10', POOL_MIN_IDLE: '2', MONITOR_ENABLED: 'false' });
    try {
      const pool = service.app.get(PoolService);
      const results = await Promise.all(Array.from({ length: 4 }, () => pool.replenish()));
      expect(results.map((result) => result.created).reduce((sum, created) => sum + created, 0)).toBe(2);
      const [{ count }] = (await service.dataSource.query(`SELECT count(*)::int AS count FROM instance`)) as { count: number }[];
      expect(count).toBe(2);
      await eventually(async () => (await request(service.url).get('/instances?show=deallocated')).body.length === 2, 30000, 'two idle instances');
      expect((await pool.replenish()).created).toBe(0);
    } finally {
      await service.close();
    }
  });
});
