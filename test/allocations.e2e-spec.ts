import { TEST_NAMESPACE } from './support/env';
import request from 'supertest';
import { AllocationStore } from '../src/allocations/allocation.store';
import { OWNER_LABEL } from '../src/container-driver/container-driver';
import { MonitorService } from '../src/health/monitor.service';
import { InstanceLifecycleService } from '../src/instances/instance-lifecycle.service';
import { appStatus, askApp } from './support/app-client';
import { docker, eventually, Harness, sleep, startService } from './support/harness';

interface InstanceBody {
  id: number;
  state: string;
  dockerId: string;
  packetTracer: string;
  hot: boolean;
}

async function pool(service: Harness, count: number): Promise<InstanceBody[]> {
  const { body } = await request(service.url).post('/instances?wait=true&timeout=120').send({ count }).expect(201);
  expect((body as InstanceBody[]).every((instance) => instance.state === 'idle')).toBe(true);
  return body as InstanceBody[];
}

const paused = async (dockerId: string) => (await docker.getContainer(dockerId).inspect()).State.Paused;

describe('allocations', () => {
  describe('hand-out and release', () => {
    let service: Harness;

    beforeAll(async () => {
      service = await startService({ MAX_INSTANCES: '3', LEASE_MAX_SECONDS: '3600', LEASE_DEFAULT_SECONDS: '600' });
      await pool(service, 2);
    });

    afterAll(async () => {
      await service.close();
    });

    it('answers 201 with the original fields and a reachable app with the default file loaded', async () => {
      const response = await request(service.url).post('/allocations').expect(201);
      const allocation = response.body;
      expect(allocation).toMatchObject({
        id: expect.any(Number),
        url: `${service.url}/allocations/${allocation.id}`,
        packetTracer: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
        createdAt: expect.any(String),
        deletedAt: null,
        status: 'active',
        instanceId: expect.any(Number),
        expiresAt: expect.any(String),
        vnc: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
      });
      expect(response.headers.location).toBe(allocation.url);
      expect(await askApp(allocation.packetTracer, 'PING')).toBe('PONG');
      expect((await appStatus(allocation.packetTracer)).loaded).toBe('/files/default.pkt');
      const instance = (await request(service.url).get(`/instances/${allocation.instanceId}`).expect(200)).body;
      expect(instance.state).toBe('allocated');
      expect(await paused(instance.dockerId)).toBe(false);
      await request(service.url).delete(`/allocations/${allocation.id}`).expect(200);
    });

    it('builds the allocation URL from X-Forwarded-* behind a reverse proxy', async () => {
      const { body } = await request(service.url)
        .post('/allocations')
        .set('X-Forwarded-Proto', 'https')
        .set('X-Forwarded-Host', 'labs.example.org')
        .set('X-Forwarded-Prefix', '/internal')
        .expect(201);
      expect(body.url).toBe(`https://labs.example.org/internal/allocations/${body.id}`);
      await request(service.url).delete(`/allocations/${body.id}`).expect(200);
    });

    it('deallocation ends the allocation, leaves the container paused and the instance idle; a second DELETE answers the same', async () => {
      const { body: allocation } = await request(service.url).post('/allocations').expect(201);
      const ended = await request(service.url).delete(`/allocations/${allocation.id}`).expect(200);
      expect(ended.body).toMatchObject({ id: allocation.id, status: 'ended', deletedAt: expect.any(String), packetTracer: null });
      const instance = await eventually(async () => {
        const { body } = await request(service.url).get(`/instances/${allocation.instanceId}`).expect(200);
        return body.state === 'idle' ? (body as InstanceBody) : undefined;
      }, 10000, 'instance idle again');
      expect(await paused(instance.dockerId)).toBe(true);
      const again = await request(service.url).delete(`/allocations/${allocation.id}`).expect(200);
      expect(again.body).toEqual(ended.body);
      const finished = await request(service.url).get('/allocations?show=finished').expect(200);
      expect(finished.body.map((row: { id: number }) => row.id)).toContain(allocation.id);
      const current = await request(service.url).get('/allocations?show=current').expect(200);
      expect(current.body.map((row: { id: number }) => row.id)).not.toContain(allocation.id);
    });

    it('returns the same allocation for the same Idempotency-Key', async () => {
      const first = await request(service.url).post('/allocations').set('Idempotency-Key', 'lab-42-student-7').expect(201);
      const second = await request(service.url).post('/allocations').set('Idempotency-Key', 'lab-42-student-7').expect(200);
      expect(second.body.id).toBe(first.body.id);
      expect(second.body.instanceId).toBe(first.body.instanceId);
      await request(service.url).delete(`/allocations/${first.body.id}`).expect(200);
    });

    it('answers 202 at once with Prefer: respond-async, and the allocation becomes active', async () => {
      const accepted = await request(service.url).post('/allocations').set('Prefer', 'respond-async').expect(202);
      expect(accepted.body.status).toBe('pending');
      expect(accepted.headers.location).toBe(accepted.body.url);
      const active = await eventually(async () => {
        const { body } = await request(service.url).get(`/allocations/${accepted.body.id}`).expect(200);
        return body.status === 'active' ? body : undefined;
      }, 10000, 'active');
      expect(await askApp(active.packetTracer, 'PING')).toBe('PONG');
      await request(service.url).delete(`/allocations/${active.id}`).expect(200);
    });

    it('keeps labels and a lease; a lease can be renewed', async () => {
      const { body } = await request(service.url)
        .post('/allocations')
        .send({ leaseSeconds: 30, labels: { course: 'net101' } })
        .expect(201);
      expect(body.labels).toEqual({ course: 'net101' });
      expect(body.leaseSeconds).toBe(30);
      const renewed = await request(service.url).post(`/allocations/${body.id}/lease`).send({ leaseSeconds: 900 }).expect(200);
      expect(new Date(renewed.body.expiresAt).getTime()).toBeGreaterThan(Date.now() + 800000);
      await request(service.url).delete(`/allocations/${body.id}`).expect(200);
      const refused = await request(service.url).post(`/allocations/${body.id}/lease`).send({}).expect(409);
      expect(refused.body.message).toContain('only an active allocation');
    });

    it('refuses malformed bodies, unknown ids and bad filters with clear answers, changing nothing', async () => {
      const before = await request(service.url).get('/allocations?show=all').expect(200);
      const bodies: [unknown, RegExp][] = [
        [{ leaseSeconds: -1 }, /leaseSeconds must be at least 1/],
        [{ leaseSeconds: 'long' }, /leaseSeconds must be an integer/],
        [{ leaseSeconds: 7200 }, /leaseSeconds must be at most 3600/],
        [{ labels: 'x' }, /labels must be an object/],
        [{ labels: { a: 1 } }, /label "a" must map/],
        [{ file: '' }, /file must not be empty/],
        [{ file: '../../etc/passwd' }, /is not a cached file/],
        [{ colour: 'red' }, /property colour should not exist/],
      ];
      for (const [body, message] of bodies) {
        const response = await request(service.url).post('/allocations').send(body as object).expect(400);
        expect(response.body).toEqual({ status: 400, message: expect.stringMatching(message) });
      }
      await request(service.url).post('/allocations').set('Content-Type', 'application/json').send('{"leaseSeconds":').expect(400);
      await request(service.url).get('/allocations/abc').expect(400);
      const missing = await request(service.url).get('/allocations/424242').expect(404);
      expect(missing.body).toEqual({ status: 404, message: 'allocation 424242 does not exist' });
      await request(service.url).delete('/allocations/424242').expect(404);
      await request(service.url).get('/allocations?show=yesterday').expect(400);
      const after = await request(service.url).get('/allocations?show=all').expect(200);
      expect(after.body).toEqual(before.body);
      const idle = await request(service.url).get('/instances?show=deallocated').expect(200);
      expect(idle.body).toHaveLength(2);
    });
  });

  it('hands 200 concurrent requests against a pool of 20 to exactly 20 distinct instances, with 180 clean 503s', async () => {
    const service = await startService({ MAX_INSTANCES: '20', ALLOCATION_TIMEOUT_MS: '60000' });
    try {
      await pool(service, 20);
      const answers = await Promise.all(Array.from({ length: 200 }, () => request(service.url).post('/allocations')));
      const ok = answers.filter((answer) => answer.status === 201);
      const refused = answers.filter((answer) => answer.status === 503);
      expect(ok).toHaveLength(20);
      expect(refused).toHaveLength(180);
      expect(refused.every((answer) => answer.body.status === 503 && /maximum of 20 instances/.test(answer.body.message))).toBe(true);
      expect(refused.every((answer) => Number(answer.headers['retry-after']) > 0)).toBe(true);
      const instanceIds = ok.map((answer) => answer.body.instanceId as number);
      expect(new Set(instanceIds).size).toBe(20);
      const addresses = ok.map((answer) => answer.body.packetTracer as string);
      expect(new Set(addresses).size).toBe(20);
      // The database and the engine agree: 20 allocated instances, each container running and unpaused.
      const allocated = (await request(service.url).get('/instances?show=allocated').expect(200)).body as InstanceBody[];
      expect(allocated.map((instance) => instance.id).sort()).toEqual([...instanceIds].sort());
      const containers = await docker.listContainers({ all: true, filters: { label: [`${OWNER_LABEL}=${TEST_NAMESPACE}`] } });
      expect(containers).toHaveLength(20);
      expect(containers.every((container) => container.State === 'running')).toBe(true);
      for (const address of addresses) expect(await askApp(address, 'PING')).toBe('PONG');
      const current = (await request(service.url).get('/allocations?show=current').expect(200)).body;
      expect(current).toHaveLength(20);
    } finally {
      await service.close();
    }
  });

  it('never hands out an instance whose app stopped answering', async () => {
    const service = await startService({ MAX_INSTANCES: '2', PROBE_TIMEOUT_MS: '300', MONITOR_ENABLED: 'false' });
    try {
      const [broken, healthy] = await pool(service, 2);
      // Make the first instance's app stop answering, then put it back to sleep as if nothing happened.
      await docker.getContainer(broken.dockerId).unpause();
      expect(await askApp(broken.packetTracer, 'FAIL')).toBe('OK failing');
      await docker.getContainer(broken.dockerId).pause();
      const first = await request(service.url).post('/allocations').expect(201);
      expect(first.body.instanceId).toBe(healthy.id);
      const second = await request(service.url).post('/allocations').expect(503);
      expect(second.body.message).toMatch(/maximum of 2 instances/);
      const instance = (await request(service.url).get(`/instances/${broken.id}`).expect(200)).body;
      expect(instance.state).toBe('error');
      expect(instance.stateReason).toMatch(/failed while being prepared/);
      const all = (await request(service.url).get('/allocations?show=all').expect(200)).body as { instanceId: number | null }[];
      expect(all.some((allocation) => allocation.instanceId === broken.id)).toBe(false);
    } finally {
      await service.close();
    }
  });

  it('takes the instance back when the lease expires, and returns it to the pool', async () => {
    // Through the high queue, as a deployment with separate api and worker processes runs it.
    const service = await startService({ MAX_INSTANCES: '1', MONITOR_INTERVAL_MS: '300', LOCAL_HANDOFF: 'false' });
    try {
      const [instance] = await pool(service, 1);
      const { body } = await request(service.url).post('/allocations').send({ leaseSeconds: 1 }).expect(201);
      const expired = await eventually(async () => {
        const { body: current } = await request(service.url).get(`/allocations/${body.id}`).expect(200);
        return current.status === 'expired' ? current : undefined;
      }, 10000, 'lease expiry');
      expect(expired.deletedAt).not.toBeNull();
      await eventually(async () => (await request(service.url).get(`/instances/${instance.id}`)).body.state === 'idle', 10000, 'idle');
      expect(await paused(instance.dockerId)).toBe(true);
      const next = await request(service.url).post('/allocations').expect(201);
      expect(next.body.instanceId).toBe(instance.id);
    } finally {
      await service.close();
    }
  });

  it('keeps an allocation whose lease was renewed after the monitor found it due: the renewal wins', async () => {
    const service = await startService({ MAX_INSTANCES: '1', MONITOR_ENABLED: 'false' });
    try {
      await pool(service, 1);
      const { body } = await request(service.url).post('/allocations').send({ leaseSeconds: 60 }).expect(201);
      await service.dataSource.query(`UPDATE allocation SET expires_at = now() - interval '1 second' WHERE id = $1`, [body.id]);
      const store = service.app.get(AllocationStore);
      const dueForExpiry = store.dueForExpiry.bind(store);
      let found: number[] = [];
      // The renewal lands between the monitor's read of the due leases and its expiry of them.
      jest.spyOn(store, 'dueForExpiry').mockImplementationOnce(async (limit?: number) => {
        found = await dueForExpiry(limit);
        await request(service.url).post(`/allocations/${body.id}/lease`).send({ leaseSeconds: 600 }).expect(200);
        return found;
      });
      const report = await service.app.get(MonitorService).pass();
      expect(found).toContain(body.id);
      expect(report.repairs).not.toContain(`allocation ${body.id}: lease expired`);
      const { body: after } = await request(service.url).get(`/allocations/${body.id}`).expect(200);
      expect(after).toMatchObject({ status: 'active', instanceId: body.instanceId });
      expect(new Date(after.expiresAt).getTime()).toBeGreaterThan(Date.now() + 500000);
      expect((await request(service.url).get(`/instances/${body.instanceId}`).expect(200)).body.state).toBe('allocated');
    } finally {
      await service.close();
    }
  });

  it('creates an instance when the pool is empty (cold path), within the limits', async () => {
    const service = await startService({ MAX_INSTANCES: '1' });
    try {
      const { body } = await request(service.url).post('/allocations').expect(201);
      expect(await askApp(body.packetTracer, 'PING')).toBe('PONG');
      const refused = await request(service.url).post('/allocations').expect(503);
      expect(refused.body.message).toContain('maximum of 1 instances');
    } finally {
      await service.close();
    }
  });

  it('at the instance limit, waits for an instance being released instead of answering 503', async () => {
    const service = await startService({ MAX_INSTANCES: '1', MONITOR_ENABLED: 'false' });
    try {
      const first = (await request(service.url).post('/allocations').expect(201)).body;
      // Slow the reset down, so the instance is still being released when the next request comes.
      expect(await askApp(first.packetTracer, 'SLOW 300')).toBe('OK slow 300');
      await request(service.url).delete(`/allocations/${first.id}`).expect(200);
      const second = (await request(service.url).post('/allocations').expect(201)).body;
      expect(second.instanceId).toBe(first.instanceId);
      // It was handed out after its release finished, not during it.
      const history = (await request(service.url).get(`/instances/${first.instanceId}/history`).expect(200)).body as { toState: string; at: string }[];
      const backInPool = history.filter((change) => change.toState === 'idle').pop();
      expect(Date.parse(second.activatedAt)).toBeGreaterThanOrEqual(Date.parse(backInPool!.at));
      // With nothing on its way back, the limit still answers at once.
      const refused = await request(service.url).post('/allocations').expect(503);
      expect(refused.body.message).toContain('maximum of 1 instances');
    } finally {
      await service.close();
    }
  });

  it('claims the instance it creates on the cold path before probing it, so nothing else can pool or take it', async () => {
    const service = await startService({ MAX_INSTANCES: '1', WORKLOAD_ENV: 'PT_BIND=127.0.0.1,PT_START_DELAY_MS=3000', MONITOR_ENABLED: 'false' });
    try {
      const { body: first } = await request(service.url).post('/allocations').set('Prefer', 'respond-async').expect(202);
      const started = await eventually(async () => {
        const rows = (await service.dataSource.query(`SELECT id, state, ports FROM instance WHERE state NOT IN ('creating', 'starting')`)) as {
          id: number;
          state: string;
          ports: { ipc: number };
        }[];
        return rows[0];
      }, 15000, 'the new instance to leave starting');
      // Its app is still starting, and the allocation that made it already holds it.
      await expect(askApp(`127.0.0.1:${started.ports.ipc}`, 'PING', 300)).rejects.toThrow();
      expect(started.state).toBe('allocated');
      const [held] = (await service.dataSource.query(`SELECT instance_id, holds_instance_state FROM allocation WHERE id = $1`, [first.id])) as {
        instance_id: number;
        holds_instance_state: string;
      }[];
      expect(held).toEqual({ instance_id: started.id, holds_instance_state: 'allocated' });
      // A wait-ready job for it (the monitor re-queues one for a slow start) leaves it alone.
      expect(await service.app.get(InstanceLifecycleService).waitReady(started.id)).toBe(false);
      const active = await eventually(async () => {
        const { body } = await request(service.url).get(`/allocations/${first.id}`).expect(200);
        return body.status === 'active' ? body : undefined;
      }, 20000, 'the allocation to become active');
      expect(active.instanceId).toBe(started.id);
      expect(await askApp(active.packetTracer, 'PING')).toBe('PONG');
    } finally {
      await service.close();
    }
  });

  it('hands out a hot spare without an engine call, and keeps the spare count topped up', async () => {
    const service = await startService({ MAX_INSTANCES: '3', POOL_HOT_SPARES: '1', POOL_MIN_IDLE: '2', MONITOR_INTERVAL_MS: '300' });
    try {
      const hot = await eventually(async () => {
        const { body } = await request(service.url).get('/instances?show=deallocated').expect(200);
        return (body as InstanceBody[]).length >= 2 && (body as InstanceBody[]).find((instance) => instance.hot);
      }, 30000, 'a hot spare');
      expect(await paused(hot.dockerId)).toBe(false);
      const { body } = await request(service.url).post('/allocations').expect(201);
      expect(body.instanceId).toBe(hot.id);
      expect(body.stateReason).toContain('hot spare');
      expect(await askApp(body.packetTracer, 'PING')).toBe('PONG');
      await eventually(async () => {
        const { body: idle } = await request(service.url).get('/instances?show=deallocated').expect(200);
        return (idle as InstanceBody[]).some((instance) => instance.hot && instance.id !== hot.id);
      }, 30000, 'a new hot spare');
    } finally {
      await service.close();
    }
  });

  it('answers 500 with a message when the engine fails', async () => {
    const service = await startService({ MAX_INSTANCES: '1', WORKLOAD_IMAGE: 'pt-instance-manager/no-such-image:latest', MONITOR_ENABLED: 'false' });
    try {
      const response = await request(service.url).post('/allocations').expect(500);
      expect(response.body).toEqual({ status: 500, message: expect.stringMatching(new RegExp(`create failed: create ${TEST_NAMESPACE}-1: .*no-such-image`)) });
      await sleep(100);
    } finally {
      await service.close();
    }
  });
});
