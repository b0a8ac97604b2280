import request from 'supertest';
import { DataSource } from 'typeorm';
import { ContainerDriver, INSTANCE_LABEL, OWNER_LABEL } from '../src/container-driver/container-driver';
import { dataSourceOptions } from '../src/database/data-source-options';
import { LeaderElectionService } from '../src/health/leader-election.service';
import { MonitorService } from '../src/health/monitor.service';
import { PoolService } from '../src/instances/pool.service';
import { QueueProducer } from '../src/queues/queue.producer';
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

  describe('repairs from a snapshot that may be stale', () => {
    let service: Harness;
    let monitor: MonitorService;
    let driver: ContainerDriver;

    beforeAll(async () => {
      service = await startService({ MONITOR_ENABLED: 'false', MAX_INSTANCES: '4', ALLOCATION_TIMEOUT_MS: '5000', TRANSITION_TIMEOUT_MS: '2000' });
      monitor = service.app.get(MonitorService);
      driver = service.app.get(ContainerDriver);
    });

    afterEach(() => {
      jest.restoreAllMocks();
    });

    afterAll(async () => {
      await service.close();
    });

    /** Runs a pass whose container listing is taken first and `meanwhile` happens before the pass acts on it. */
    async function passWithStaleListing(meanwhile: () => Promise<void>) {
      const list = driver.list.bind(driver);
      jest.spyOn(driver, 'list').mockImplementationOnce(async (host: string, labels: Record<string, string>) => {
        const listed = await list(host, labels);
        await meanwhile();
        return listed;
      });
      return monitor.pass();
    }

    const backdate = (instanceId: number, seconds: number) =>
      service.dataSource.query(`UPDATE instance SET state_changed_at = now() - make_interval(secs => $2) WHERE id = $1`, [instanceId, seconds]);

    it('does not end an allocation whose paused container was unpaused since the listing', async () => {
      const { body: allocation } = await request(service.url).post('/allocations').expect(201);
      const { body: instance } = await request(service.url).get(`/instances/${allocation.instanceId}`).expect(200);
      await docker.getContainer(instance.dockerId).pause();
      await backdate(instance.id, 10);
      const report = await passWithStaleListing(() => docker.getContainer(instance.dockerId).unpause());
      expect(report.repairs).toEqual([]);
      expect((await request(service.url).get(`/allocations/${allocation.id}`).expect(200)).body.status).toBe('active');
      await request(service.url).delete(`/allocations/${allocation.id}`).expect(200);
      await eventually(async () => (await request(service.url).get(`/instances/${instance.id}`)).body.state === 'idle', 10000, 'back in the pool');
    });

    it('does not end an allocation that took the instance after the pass read its row', async () => {
      // The only instance (made by the cold path in the test above) goes to the first and then the second allocation.
      const { body: first } = await request(service.url).post('/allocations').expect(201);
      const { body: instance } = await request(service.url).get(`/instances/${first.instanceId}`).expect(200);
      // Found allocated long ago with a paused container; before the pass acts, the instance is
      // released, pooled and handed to a second allocation.
      await docker.getContainer(instance.dockerId).pause();
      await backdate(instance.id, 10);
      let second: { id: number; instanceId: number } | undefined;
      const report = await passWithStaleListing(async () => {
        await request(service.url).delete(`/allocations/${first.id}`).expect(200);
        await eventually(async () => (await request(service.url).get(`/instances/${instance.id}`)).body.state === 'idle', 10000, 'idle again');
        second = (await request(service.url).post('/allocations').expect(201)).body;
      });
      expect(second?.instanceId).toBe(instance.id);
      expect(report.repairs.filter((repair) => repair.startsWith(`instance ${instance.id}:`))).toEqual([]);
      expect((await request(service.url).get(`/allocations/${second!.id}`).expect(200)).body.status).toBe('active');
      await request(service.url).delete(`/allocations/${second!.id}`).expect(200);
    });

    it('leaves a pending holder of a paused instance alone until the queue stall window has passed (its job may only be stalled)', async () => {
      const { body: instance } = await request(service.url).post('/instances?wait=true').expect(201);
      // Claimed by an allocation whose job stalled before unpausing it.
      const allocationId = await service.dataSource.transaction(async (manager) => {
        const [{ id }] = (await manager.query(`INSERT INTO allocation (state, lease_seconds) VALUES ('pending', 600) RETURNING id`)) as { id: number }[];
        await manager.query(`UPDATE instance SET state = 'allocated', state_reason = 'test: claimed' WHERE id = $1`, [instance.id]);
        await manager.query(`UPDATE allocation SET instance_id = $2, holds_instance_state = 'allocated' WHERE id = $1`, [id, instance.id]);
        return id;
      });
      await backdate(instance.id, 5);
      const spared = await monitor.pass();
      expect(spared.repairs.filter((repair) => repair.startsWith(`instance ${instance.id}:`))).toEqual([]);
      expect((await request(service.url).get(`/allocations/${allocationId}`).expect(200)).body).toMatchObject({ status: 'pending', instanceId: instance.id });
      await backdate(instance.id, 20);
      const lost = await monitor.pass();
      expect(lost.repairs).toContain(`instance ${instance.id}: allocated but paused, allocation ended`);
      expect((await request(service.url).get(`/allocations/${allocationId}`).expect(200)).body).toMatchObject({
        status: 'failed',
        stateReason: 'ended by the monitor: its container was found paused',
      });
      await eventually(async () => (await request(service.url).get(`/instances/${instance.id}`)).body.state === 'idle', 10000, 'back in the pool');
    });

    it('fails a pending allocation as lost only once the queue stall window has passed after its timeout', async () => {
      const [{ id: recent }] = (await service.dataSource.query(
        `INSERT INTO allocation (state, lease_seconds, created_at) VALUES ('pending', 600, now() - interval '8 seconds') RETURNING id`,
      )) as { id: number }[];
      const [{ id: old }] = (await service.dataSource.query(
        `INSERT INTO allocation (state, lease_seconds, created_at) VALUES ('pending', 600, now() - interval '21 seconds') RETURNING id`,
      )) as { id: number }[];
      const report = await monitor.pass();
      expect(report.repairs).toContain(`allocation ${old}: stuck in pending, now failed`);
      expect(report.repairs).not.toContain(`allocation ${recent}: stuck in pending, now failed`);
      expect((await request(service.url).get(`/allocations/${recent}`).expect(200)).body.status).not.toBe('failed');
      await request(service.url).delete(`/allocations/${recent}`).expect(200);
    });

    it('deletes an instance stuck in deleting itself once the transition timeout has passed, whatever became of its job', async () => {
      const { body: instance } = await request(service.url).post('/instances?wait=true').expect(201);
      // A delete job under its id that will not run now (the worker that had it died).
      const parked = await service.app.get(QueueProducer).normal.add('delete', { instanceId: instance.id }, { jobId: `delete-${instance.id}`, delay: 600000 });
      await service.dataSource.query(`UPDATE instance SET state = 'deleting', state_reason = 'test: deleted' WHERE id = $1`, [instance.id]);
      await backdate(instance.id, 3);
      try {
        const report = await monitor.pass();
        expect(report.repairs).toContainEqual(expect.stringMatching(new RegExp(`^instance ${instance.id}: stuck in deleting for \\d+ s, deleted$`)));
        expect((await request(service.url).get(`/instances/${instance.id}`).expect(200)).body.state).toBe('deleted');
        await expect(docker.getContainer(instance.dockerId).inspect()).rejects.toMatchObject({ statusCode: 404 });
      } finally {
        await parked.remove();
      }
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
