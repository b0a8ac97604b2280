import { PORT_BASE, TEST_NAMESPACE } from './support/env';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import request from 'supertest';
import { INSTANCE_LABEL, OWNER_LABEL } from '../src/container-driver/container-driver';
import { testEnv } from './support/env';
import { docker, eventually, Harness, resetState, sleep, startService } from './support/harness';
import { violations } from './support/invariants';

/**
 * Faults injected during a stream of allocations and deallocations. After each, the invariants
 * must hold again within the bound: monitor interval (1 s here) + probe budget + queue stall bound
 * (lock 10 s + stalled check 5 s), and no request that got a 2xx may lose its instance.
 */
const CONVERGE_MS = 45000;
const stack = (...args: string[]) => execFileSync('bash', ['scripts/stack.sh', ...args], { stdio: 'pipe', timeout: 90000 });

const SETTINGS = {
  MAX_INSTANCES: '8',
  POOL_MIN_IDLE: '4',
  MONITOR_INTERVAL_MS: '1000',
  ALLOCATION_TIMEOUT_MS: '20000',
  RESTART_BACKOFF_MS: '200',
  PROBE_RETRIES: '30',
  PROBE_INTERVAL_MS: '50',
  PROBE_MAX_INTERVAL_MS: '500',
};

interface StreamResult {
  ok: number;
  errors: Record<string, number>;
  /** Allocations that answered 2xx but were no longer ours when we released them. */
  lost: string[];
}

/** Allocate -> hold -> release loops, bounded in time, recording what each request got. */
function stream(url: string, workers: number, durationMs: number, spared: () => Set<number>): Promise<StreamResult> {
  const result: StreamResult = { ok: 0, errors: {}, lost: [] };
  const until = Date.now() + durationMs;
  const loop = async () => {
    while (Date.now() < until) {
      const answer = await request(url).post('/allocations').timeout(30000).catch(() => null);
      if (!answer || answer.status !== 201) {
        const key = answer ? String(answer.status) : 'no answer';
        result.errors[key] = (result.errors[key] ?? 0) + 1;
        await sleep(200);
        continue;
      }
      result.ok += 1;
      await sleep(150);
      const released = await request(url).delete(`/allocations/${answer.body.id}`).timeout(30000).catch(() => null);
      if (released?.status === 200 && released.body.stateReason !== 'ended by the client' && !spared().has(answer.body.instanceId)) {
        result.lost.push(`allocation ${answer.body.id} on instance ${answer.body.instanceId}: ${released.body.status} (${released.body.stateReason})`);
      }
    }
  };
  return Promise.all(Array.from({ length: workers }, loop)).then(() => result);
}

async function converged(url: string): Promise<void> {
  let last: string[] = [];
  try {
    await eventually(async () => {
      last = await violations(url);
      const idle = (await request(url).get('/instances?show=deallocated')).body as unknown[];
      return last.length === 0 && idle.length >= 1;
    }, CONVERGE_MS, 'the invariants to hold again');
  } catch (error) {
    throw new Error(`${(error as Error).message}; still violated: ${last.join('; ')}`);
  }
}

async function idleInstances(url: string): Promise<{ id: number; dockerId: string }[]> {
  return eventually(async () => {
    const { body } = await request(url).get('/instances?show=deallocated');
    return (body as { id: number; dockerId: string }[]).length >= 3 ? body : undefined;
  }, 60000, 'an idle pool');
}

describe('faults during a stream of allocations', () => {
  describe('container faults (one service process)', () => {
    let service: Harness;

    beforeAll(async () => {
      service = await startService(SETTINGS);
      await idleInstances(service.url);
    });

    afterAll(async () => {
      await service.close();
    });

    it('recovers from a killed container, a container removed behind its back and a stray container', async () => {
      const victims = await idleInstances(service.url);
      const spared = new Set([victims[0].id, victims[1].id]);
      const running = stream(service.url, 2, 6000, () => spared);
      await sleep(500);
      await docker.getContainer(victims[0].dockerId).kill().catch(() => undefined);
      await docker.getContainer(victims[1].dockerId).remove({ force: true });
      const stray = await docker.createContainer({
        Image: service.config.workload.image,
        name: `${TEST_NAMESPACE}-stray`,
        Labels: { [OWNER_LABEL]: TEST_NAMESPACE, [INSTANCE_LABEL]: '99999' },
        Env: ['PT_BIND=127.0.0.1', `PT_PORT=${PORT_BASE + 990}`, 'VNC_PORT=0'],
        HostConfig: { NetworkMode: 'host' },
      });
      await stray.start();
      const result = await running;
      expect(result.ok).toBeGreaterThan(0);
      expect(result.lost).toEqual([]);
      await converged(service.url);
      await expect(stray.inspect()).rejects.toMatchObject({ statusCode: 404 });
      const removed = (await request(service.url).get(`/instances/${victims[1].id}`)).body;
      expect(removed).toMatchObject({ state: 'deleted', stateReason: 'container vanished' });
      const killed = (await request(service.url).get(`/instances/${victims[0].id}/history`)).body as { fromState: string; toState: string; reason: string }[];
      // Found dead by the monitor (or by an allocation that tried it), then restarted and probed again.
      expect(killed.some((change) => change.toState === 'error')).toBe(true);
      expect(killed.some((change) => change.fromState === 'error' && change.toState === 'starting')).toBe(true);
    });

    it('ends the allocation of a container killed while allocated, with the reason, and replaces the capacity', async () => {
      const { body: allocation } = await request(service.url).post('/allocations').expect(201);
      const { body: instance } = await request(service.url).get(`/instances/${allocation.instanceId}`);
      await docker.getContainer(instance.dockerId).kill();
      const ended = await eventually(async () => {
        const { body } = await request(service.url).get(`/allocations/${allocation.id}`);
        return body.status === 'ended' ? body : undefined;
      }, 15000, 'the allocation to end');
      expect(ended.stateReason).toMatch(/ended by the monitor: container exited/);
      await converged(service.url);
    });

    it('survives a Redis restart: waiting requests complete or fail cleanly, lost jobs are re-derived', async () => {
      await idleInstances(service.url);
      const running = stream(service.url, 2, 8000, () => new Set());
      await sleep(1000);
      stack('restart', 'redis');
      const result = await running;
      expect(result.lost).toEqual([]);
      expect(Object.keys(result.errors).filter((status) => !['503'].includes(status))).toEqual([]);
      await converged(service.url);
      const after = await request(service.url).post('/allocations').expect(201);
      await request(service.url).delete(`/allocations/${after.body.id}`).expect(200);
    });

    it('survives a Postgres restart: no answer but clean 503s meanwhile, and nothing stored is lost', async () => {
      await idleInstances(service.url);
      const { body: kept } = await request(service.url).post('/allocations').send({ labels: { keep: 'me' } }).expect(201);
      const running = stream(service.url, 2, 8000, () => new Set());
      await sleep(1000);
      stack('restart', 'postgres');
      const result = await running;
      expect(result.lost).toEqual([]);
      expect(Object.keys(result.errors).filter((status) => !['503'].includes(status))).toEqual([]);
      await converged(service.url);
      const { body: still } = await request(service.url).get(`/allocations/${kept.id}`).expect(200);
      expect(still).toMatchObject({ status: 'active', instanceId: kept.instanceId, labels: { keep: 'me' } });
      await request(service.url).delete(`/allocations/${kept.id}`).expect(200);
    });

    it('survives a dockerd restart: sessions keep their instance, the event stream reconnects', async () => {
      await idleInstances(service.url);
      const { body: kept } = await request(service.url).post('/allocations').expect(201);
      const running = stream(service.url, 2, 10000, () => new Set());
      await sleep(1000);
      stack('restart', 'dockerd');
      const result = await running;
      expect(result.lost).toEqual([]);
      expect(Object.keys(result.errors).filter((status) => !['503', '500'].includes(status))).toEqual([]);
      await converged(service.url);
      const { body: still } = await request(service.url).get(`/allocations/${kept.id}`).expect(200);
      expect(still).toMatchObject({ status: 'active', instanceId: kept.instanceId });
    });
  });

  describe('worker process killed (SIGKILL) in the middle of allocations', () => {
    let api: Harness;
    let worker: ChildProcess | null = null;

    const startWorker = async (): Promise<ChildProcess> => {
      const child = spawn(process.execPath, ['-r', 'ts-node/register/transpile-only', 'src/main.ts'], {
        env: { ...process.env, ...testEnv({ ...SETTINGS, ROLE: 'worker', HTTP_PORT: String(20000 + Math.floor(Math.random() * 20000)) }) },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      return child;
    };

    beforeAll(async () => {
      await resetState();
      api = await startService({ ...SETTINGS, ROLE: 'api' }, { reset: false });
      worker = await startWorker();
      await idleInstances(api.url);
    });

    afterAll(async () => {
      worker?.kill('SIGKILL');
      await api.close();
      await resetState();
    });

    it('loses no 2xx allocation and converges once a new worker runs', async () => {
      const running = stream(api.url, 3, 12000, () => new Set());
      await sleep(1500);
      worker!.kill('SIGKILL');
      await sleep(1000);
      worker = await startWorker();
      const result = await running;
      expect(result.ok).toBeGreaterThan(0);
      expect(result.lost).toEqual([]);
      expect(Object.keys(result.errors).filter((status) => !['503'].includes(status))).toEqual([]);
      await converged(api.url);
    });
  });
});
