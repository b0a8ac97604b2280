import { PORT_BASE, TEST_NAMESPACE } from './support/env';
import request from 'supertest';
import { ContainerDriver, INSTANCE_LABEL, OWNER_LABEL } from '../src/container-driver/container-driver';
import { InstanceLifecycleService } from '../src/instances/instance-lifecycle.service';
import { docker, eventually, Harness, sleep, startService } from './support/harness';

const containersOf = async (owner = TEST_NAMESPACE) =>
  docker.listContainers({ all: true, filters: { label: [`${OWNER_LABEL}=${owner}`] } });

describe('instances', () => {
  describe('life cycle', () => {
    let service: Harness;

    beforeAll(async () => {
      service = await startService({ MAX_INSTANCES: '5' });
    });

    afterAll(async () => {
      await service.close();
    });

    it('creates instances that become idle: paused containers, verified with the engine', async () => {
      const created = await request(service.url).post('/instances').send({ count: 2 }).expect(201);
      expect(created.body).toHaveLength(2);
      expect(created.body[0]).toMatchObject({ state: 'creating', status: 'starting', deletedAt: null });
      expect(Number.isInteger(created.body[0].id)).toBe(true);
      const ids: number[] = created.body.map((instance: { id: number }) => instance.id);
      for (const id of ids) {
        const idle = await eventually(async () => {
          const { body } = await request(service.url).get(`/instances/${id}`).expect(200);
          return body.state === 'idle' ? body : undefined;
        }, 30000, `instance ${id} idle`);
        expect(idle).toMatchObject({ status: 'deallocated', url: `${service.url}/instances/${id}`, packetTracer: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
        const info = await docker.getContainer(idle.dockerId).inspect();
        expect(info.State.Paused).toBe(true);
        expect(info.Config.Labels[INSTANCE_LABEL]).toBe(String(id));
      }
      const listed = await request(service.url).get('/instances?show=deallocated').expect(200);
      expect(listed.body.map((instance: { id: number }) => instance.id)).toEqual(ids);
      expect(listed.headers['x-total-count']).toBe('2');
    });

    it('answers once the instance is settled with ?wait=true, and records every state change', async () => {
      const { body } = await request(service.url).post('/instances?wait=true').expect(201);
      expect(body.state).toBe('idle');
      const history = await request(service.url).get(`/instances/${body.id}/history`).expect(200);
      expect(history.body.map((change: { toState: string }) => change.toState)).toEqual(['creating', 'starting', 'idle']);
      expect(history.body.every((change: { reason: string; at: string }) => change.reason && change.at)).toBe(true);
    });

    it('deletes an instance: container removed, ports released, row kept with deletedAt', async () => {
      const { body: instance } = await request(service.url).post('/instances?wait=true').expect(201);
      const ports = await request(service.url).get('/ports').expect(200);
      expect(ports.body.ports.filter((port: { instanceId: number }) => port.instanceId === instance.id)).toHaveLength(2);
      await request(service.url).delete(`/instances/${instance.id}`).expect(200);
      const deleted = await eventually(async () => {
        const { body } = await request(service.url).get(`/instances/${instance.id}`).expect(200);
        return body.state === 'deleted' ? body : undefined;
      }, 20000, 'deleted');
      expect(deleted.deletedAt).not.toBeNull();
      expect(deleted.status).toBe('finished');
      await expect(docker.getContainer(instance.dockerId).inspect()).rejects.toMatchObject({ statusCode: 404 });
      const after = await request(service.url).get('/ports').expect(200);
      expect(after.body.ports.filter((port: { instanceId: number }) => port.instanceId === instance.id)).toHaveLength(0);
      const finished = await request(service.url).get('/instances?show=finished').expect(200);
      expect(finished.body.map((row: { id: number }) => row.id)).toContain(instance.id);
      // Deleting again answers the deleted instance and changes nothing.
      const again = await request(service.url).delete(`/instances/${instance.id}`).expect(200);
      expect(again.body.state).toBe('deleted');
    });

    it('refuses malformed requests with 400/404 and a clear message, changing nothing', async () => {
      const before = await request(service.url).get('/instances?show=all').expect(200);
      const cases: [string, string, number, RegExp][] = [
        ['get', '/instances/abc', 400, /id must be a positive integer/],
        ['get', '/instances/0', 400, /id must be a positive integer/],
        ['get', '/instances/1.5', 400, /id must be a positive integer/],
        ['delete', '/instances/-3', 400, /id must be a positive integer/],
        ['get', '/instances/999999', 404, /instance 999999 does not exist/],
        ['delete', '/instances/999999', 404, /instance 999999 does not exist/],
        ['get', '/instances?show=sleeping', 400, /show must be one of all, starting, deallocated/],
        ['get', '/instances?limit=0', 400, /limit must be at least 1/],
      ];
      for (const [method, path, status, message] of cases) {
        const response = await (method === 'get' ? request(service.url).get(path) : request(service.url).delete(path)).expect(status);
        expect(response.body).toEqual({ status, message: expect.stringMatching(message) });
      }
      for (const [body, message] of [
        [{ count: 0 }, /count must be at least 1/],
        [{ count: 101 }, /count must be at most 100/],
        [{ count: 'two' }, /count must be an integer/],
        [{ count: 1, colour: 'red' }, /property colour should not exist/],
      ] as [object, RegExp][]) {
        const response = await request(service.url).post('/instances').send(body).expect(400);
        expect(response.body).toEqual({ status: 400, message: expect.stringMatching(message) });
      }
      const malformed = await request(service.url).post('/instances').set('Content-Type', 'application/json').send('{"count": ').expect(400);
      expect(malformed.body.status).toBe(400);
      await request(service.url).post('/instances?wait=perhaps').expect(400);
      const after = await request(service.url).get('/instances?show=all').expect(200);
      expect(after.body).toEqual(before.body);
    });

    it('reports limits, capacity and counts in /details', async () => {
      const { body } = await request(service.url).get('/details').expect(200);
      expect(body.limits).toMatchObject({ maxInstances: 5, portRange: { from: PORT_BASE, to: PORT_BASE + 199 }, portsPerInstance: 2 });
      expect(body.hosts[0]).toMatchObject({ name: 'local', canCreate: true });
      expect(body.instances.idle).toBeGreaterThanOrEqual(3);
    });
  });

  describe('limits', () => {
    it('refuses creation past the instance maximum with a 503 naming it, with no container and no leaked port', async () => {
      const service = await startService({ MAX_INSTANCES: '2' });
      try {
        await request(service.url).post('/instances').send({ count: 2 }).expect(201);
        const refused = await request(service.url).post('/instances').expect(503);
        expect(refused.body).toEqual({ status: 503, message: expect.stringContaining('the maximum of 2 instances is reached') });
        expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
        const ports = await request(service.url).get('/ports').expect(200);
        expect(ports.body.ports).toHaveLength(4);
        await eventually(async () => (await containersOf()).length === 2, 10000, 'two containers');
        const all = await request(service.url).get('/instances?show=all').expect(200);
        expect(all.body).toHaveLength(2);
      } finally {
        await service.close();
      }
    });

    it('refuses creation when the port range is exhausted', async () => {
      const service = await startService({ PORT_RANGE: `${PORT_BASE}-${PORT_BASE + 4}`, MAX_INSTANCES: '10' });
      try {
        await request(service.url).post('/instances').send({ count: 2 }).expect(201);
        const refused = await request(service.url).post('/instances').expect(503);
        expect(refused.body.message).toContain(`no free ports left in ${PORT_BASE}-${PORT_BASE + 4}`);
      } finally {
        await service.close();
      }
    });

    it('refuses creation when host memory use is above the configured percentage (measured on the host)', async () => {
      const service = await startService({ MAX_HOST_MEMORY_PERCENT: '1' });
      try {
        await eventually(async () => (await request(service.url).get('/details')).body.hosts[0].usage, 10000, 'host usage sampled');
        const refused = await request(service.url).post('/instances').expect(503);
        expect(refused.body.message).toMatch(/host memory use \d+\.\d% on local is above the limit of 1%/);
        expect((await containersOf()).length).toBe(0);
      } finally {
        await service.close();
      }
    });

    it('50 concurrent creation requests never exceed the maximum nor share a port', async () => {
      const service = await startService({ MAX_INSTANCES: '10', MONITOR_ENABLED: 'false' });
      try {
        const answers = await Promise.all(Array.from({ length: 50 }, () => request(service.url).post('/instances')));
        const statuses = answers.map((answer) => answer.status).sort();
        expect(statuses.filter((status) => status === 201)).toHaveLength(10);
        expect(statuses.filter((status) => status === 503)).toHaveLength(40);
        const ports = await request(service.url).get('/ports').expect(200);
        const numbers = ports.body.ports.map((port: { number: number }) => port.number);
        expect(new Set(numbers).size).toBe(20);
        const instances = await request(service.url).get('/instances?show=all').expect(200);
        expect(instances.body).toHaveLength(10);
        const held = new Set(instances.body.flatMap((instance: { ports: Record<string, number> }) => Object.values(instance.ports)));
        expect(held.size).toBe(20);
        await eventually(async () => {
          const { body } = await request(service.url).get('/instances?show=deallocated').expect(200);
          return body.length === 10;
        }, 60000, 'ten idle instances');
        expect((await containersOf()).length).toBe(10);
      } finally {
        await service.close();
      }
    });
  });

  it('pauses a ready instance and pools it under its row lock: a claim racing the pause waits, then finds it idle', async () => {
    const service = await startService({ MAX_INSTANCES: '1', MONITOR_ENABLED: 'false' });
    try {
      const { body: instance } = await request(service.url).post('/instances?wait=true').expect(201);
      // Back to starting with a running container, as if it had just been started.
      await docker.getContainer(instance.dockerId).unpause();
      await service.dataSource.query(`UPDATE instance SET state = 'starting', state_reason = 'test: started' WHERE id = $1`, [instance.id]);
      const driver = service.app.get(ContainerDriver);
      const pause = driver.pause.bind(driver);
      let claim: Promise<number> | undefined;
      jest.spyOn(driver, 'pause').mockImplementationOnce(async (host: string, id: string) => {
        // What the cold path does to a starting instance, while the pause is under way.
        claim = service.dataSource
          .query(`UPDATE instance SET state = 'allocated', state_reason = 'test: claimed' WHERE id = $1 AND state = 'starting'`, [instance.id])
          .then(([, count]: [unknown, number]) => count);
        await sleep(300);
        await pause(host, id);
      });
      expect(await service.app.get(InstanceLifecycleService).waitReady(instance.id)).toBe(true);
      expect(await claim).toBe(0);
      const { body: after } = await request(service.url).get(`/instances/${instance.id}`).expect(200);
      expect(after.state).toBe('idle');
      expect((await docker.getContainer(instance.dockerId).inspect()).State.Paused).toBe(true);
    } finally {
      await service.close();
    }
  });

  describe('readiness failures', () => {
    it('puts an instance whose app never answers in error after its probe budget, with the reason', async () => {
      const service = await startService({
        WORKLOAD_ENV: 'PT_BIND=127.0.0.1,PT_NEVER_READY=1',
        PROBE_RETRIES: '4',
        PROBE_INTERVAL_MS: '50',
        PROBE_TIMEOUT_MS: '200',
        MONITOR_ENABLED: 'false',
      });
      try {
        const { body } = await request(service.url).post('/instances?wait=true&timeout=30').expect(201);
        expect(body.state).toBe('error');
        expect(body.stateReason).toMatch(/readiness probe failed 4 times: no answer to "PING"/);
        const errors = await request(service.url).get('/instances?show=error').expect(200);
        expect(errors.body.map((instance: { id: number }) => instance.id)).toEqual([body.id]);
      } finally {
        await service.close();
      }
    });

    it('puts an instance whose container exits during start-up in error with the exit code', async () => {
      const service = await startService({
        WORKLOAD_ENV: 'PT_BIND=127.0.0.1,PT_START_DELAY_MS=5000,PT_EXIT_AFTER_MS=300',
        PROBE_RETRIES: '30',
        PROBE_INTERVAL_MS: '100',
        PROBE_MAX_INTERVAL_MS: '200',
        MONITOR_ENABLED: 'false',
      });
      try {
        const { body } = await request(service.url).post('/instances?wait=true&timeout=30').expect(201);
        expect(body.state).toBe('error');
        expect(body.stateReason).toMatch(/container is exited \(exit code 3\)/);
      } finally {
        await service.close();
      }
    });
  });
});
