import { execFileSync, spawnSync } from 'node:child_process';
import request from 'supertest';
import { eventually, Harness, startService } from './support/harness';

const stack = (...args: string[]) => execFileSync('bash', ['scripts/stack.sh', ...args], { stdio: 'pipe', timeout: 60000 });

describe('service health', () => {
  let service: Harness;

  beforeAll(async () => {
    service = await startService();
  });

  afterAll(async () => {
    stack('start', 'redis');
    await service.close();
  });

  it('answers live, and ready with Postgres, Redis and Docker each reported up', async () => {
    await request(service.url).get('/health/live').expect(200, { status: 'ok' });
    const ready = await request(service.url).get('/health/ready').expect(200);
    expect(ready.body.status).toBe('ok');
    expect(ready.body.details).toMatchObject({
      postgres: { status: 'up' },
      redis: { status: 'up' },
      docker: { status: 'up', hosts: { local: 'up' } },
    });
  });

  it('redirects / to the Swagger UI and serves the OpenAPI document', async () => {
    await request(service.url).get('/').expect(302).expect('Location', '/apidocs');
    const ui = await request(service.url).get('/apidocs/').expect(200);
    expect(ui.text).toContain('swagger-ui');
    const doc = await request(service.url).get('/apidocs/openapi.json').expect(200);
    expect(Object.keys(doc.body.paths)).toEqual(expect.arrayContaining(['/allocations', '/instances', '/health/ready']));
  });

  it('serves Prometheus metrics, including instances per state', async () => {
    await request(service.url).post('/instances').expect(201);
    const metrics = await request(service.url).get('/metrics').expect(200);
    expect(metrics.headers['content-type']).toContain('text/plain');
    expect(metrics.text).toMatch(/ptim_instances\{state="(creating|starting|idle)"\} 1/);
    expect(metrics.text).toContain('ptim_process_resident_memory_bytes');
  });

  it('reports Redis down (503) while it is stopped, and up again once it is back', async () => {
    stack('stop', 'redis');
    try {
      const down = await request(service.url).get('/health/ready').expect(503);
      expect(down.body.status).toBe('error');
      expect(down.body.details.redis.status).toBe('down');
      expect(down.body.details.postgres.status).toBe('up');
      expect(down.body.details.docker.status).toBe('up');
      // Requests that need the queue fail fast with a clear 503 instead of hanging.
      const started = Date.now();
      const refused = await request(service.url).post('/allocations').expect(503);
      expect(refused.body).toEqual({ status: 503, message: expect.stringContaining('queue') });
      expect(refused.headers['retry-after']).toBeDefined();
      expect(Date.now() - started).toBeLessThan(3000);
    } finally {
      stack('start', 'redis');
    }
    await eventually(async () => (await request(service.url).get('/health/ready')).status === 200, 20000, 'ready again');
  });

  it('reports Docker down when its engine does not answer', async () => {
    const offline = await startService({ DOCKER_HOST: 'unix:///tmp/ptim-no-such-docker.sock', MONITOR_ENABLED: 'false' }, { reset: false });
    try {
      const down = await request(offline.url).get('/health/ready').expect(503);
      expect(down.body.details.docker.status).toBe('down');
      expect(down.body.details.docker.hosts.local).toMatch(/^down: /);
      expect(down.body.details.postgres.status).toBe('up');
    } finally {
      await offline.close();
    }
  });

  it('stops at start-up with one line naming a bad setting', () => {
    const run = spawnSync('npx', ['--no-install', 'ts-node', '--transpile-only', 'src/main.ts'], {
      env: { ...process.env, DATABASE_URL: 'postgres://x@127.0.0.1/x', HTTP_PORT: 'eighty' },
      encoding: 'utf8',
      timeout: 60000,
    });
    expect(run.status).toBe(2);
    const lines = run.stderr.split('\n').filter((line) => line.trim() && !line.startsWith('npm warn'));
    expect(lines).toEqual(['pt-instance-manager: invalid configuration: HTTP_PORT must be an integer between 1 and 65535 (got "eighty")']);
  });
});
