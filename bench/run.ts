/**
 * npm run bench: allocation speed and cost of the service against the floor the engine sets, in one
 * run, interleaved. See bench/README.md for what each figure means. BENCH_SMOKE=1 runs a few
 * iterations of everything (part of npm test, so the benchmark never rots).
 */
import 'reflect-metadata';
import Docker from 'dockerode';
import Redis from 'ioredis';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { DataSource } from 'typeorm';
import { loadConfig } from '../src/config/app-config';
import { dataSourceOptions } from '../src/database/data-source-options';
import { Floor, FloorContainer, removeOwned } from './floor';
import { CpuAccount } from './cpu';
import { RssSampler, containerMemoryMb, hostAvailableMb, shimRssMb } from './memory';
import { Row, ScalePoint, Target, chartSvg, latencyTable, target, targetTable, writeChart } from './report';
import { Client, ServiceProcess, sleep } from './service';
import { Samples, Summary, round, summarize } from './stats';

const ROOT = resolve(__dirname, '..');
const SMOKE = process.env.BENCH_SMOKE === '1';
const NS = process.env.BENCH_NAMESPACE ?? 'ptim-bench';
// Below the kernel's ephemeral range (32768-60999 by default), so no outgoing connection holds a port an app must bind.
const PORT_BASE = Number(process.env.BENCH_PORT_BASE ?? 30000);
const OUT = resolve(process.env.BENCH_OUT ?? (SMOKE ? join(ROOT, '.stack', 'bench-smoke') : join(ROOT, 'bench', 'results')));

const PLAN = SMOKE
  ? { pool: 12, clients: 8, hot: 8, c1: 3, c8Rounds: 2, loopSeconds: 1, loopRepeats: 1, holdMs: 50, cold: 2, scale: [10, 12], scaleIters: 3, monitorPasses: 2, idleSeconds: 1 }
  : { pool: 16, clients: 8, hot: 8, c1: 150, c8Rounds: 25, loopSeconds: 15, loopRepeats: 2, holdMs: 50, cold: 30, scale: [10, 50, 100, 200], scaleIters: 60, monitorPasses: 10, idleSeconds: 5 };

const log = (text: string) => console.log(`bench: ${text}`);
const now = () => performance.now();
/** Wall-clock milliseconds with sub-millisecond precision, comparable with the database's clock_timestamp(). */
const wallMs = () => performance.timeOrigin + performance.now();
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

function benchDatabaseUrl(): string {
  if (process.env.BENCH_DATABASE_URL) return process.env.BENCH_DATABASE_URL;
  const base = process.env.DATABASE_URL;
  if (!base) throw new Error('DATABASE_URL is not set (run through npm run bench, which brings up the stack)');
  const url = new URL(base);
  url.pathname = `/${decodeURIComponent(url.pathname.slice(1)) || 'ptim'}_bench`;
  return url.toString();
}

/** The bench's own database (created and migrated if needed, then emptied), Redis keys and containers. */
async function prepareState(databaseUrl: string, redisUrl: string): Promise<void> {
  const name = decodeURIComponent(new URL(databaseUrl).pathname.slice(1));
  if (!process.env.BENCH_DATABASE_URL && process.env.DATABASE_URL) {
    const admin = new DataSource({ type: 'postgres', url: process.env.DATABASE_URL });
    await admin.initialize();
    const found: unknown[] = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.length === 0) {
      log(`creating database ${name}`);
      await admin.query(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
    }
    await admin.destroy();
  }
  const dataSource = new DataSource(dataSourceOptions(databaseUrl));
  await dataSource.initialize();
  await dataSource.runMigrations();
  await dataSource.query(
    'TRUNCATE "state_change", "allocation", "port", "instance", "cached_file", "host_status", "leader_lease" RESTART IDENTITY CASCADE',
  );
  await dataSource.destroy();
  const redis = new Redis(redisUrl);
  const keys = await redis.keys(`${NS}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
}

/** Figures at one pool size of the scaling phase. */
interface ScaleFigure {
  idle: number;
  alloc: Summary;
  floorUnpauseReset: Summary;
  monitorPassMs: Summary;
  monitorRequestMs: Summary;
  containerCgroupMb: { mean: number; anonMean: number; counted: number };
  shimRssMb: { mean: number; counted: number };
  hostAvailableMb: number;
  /** MemAvailable lost per instance added since the first pool size: container, shim and kernel together. */
  hostCostPerInstanceMb: number | null;
  serviceRssMb: number;
}

// --- service operations over HTTP ----------------------------------------------------------

interface Handed {
  id: number;
  instanceId: number;
  hot: boolean;
  ms: number;
}

async function allocate(client: Client): Promise<Handed> {
  const reply = await client.call('POST', '/allocations', {});
  if (reply.status !== 201) throw new Error(`POST /allocations answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return { id: reply.body.id, instanceId: reply.body.instanceId, hot: /hot spare/.test(reply.body.stateReason), ms: reply.ms };
}

/** DELETE /allocations/:id; resolves with its latency and the wall time the request was sent. */
async function deallocate(client: Client, id: number): Promise<{ ms: number; sentAt: number }> {
  const sentAt = wallMs();
  const reply = await client.call('DELETE', `/allocations/${id}`);
  if (reply.status !== 200) throw new Error(`DELETE /allocations/${id} answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return { ms: reply.ms, sentAt };
}

/**
 * Waits until the released instance is idle (allocatable) again and answers how long after `sentAt`
 * that happened, from the instant the database recorded the transition (its history). It watches
 * the state store directly, not through the service, so observing adds no load to the service.
 */
async function allocatableAfter(store: DataSource, instanceId: number, sentAt: number): Promise<number> {
  const deadline = now() + 30000;
  for (;;) {
    const [row] = (await store.query(
      `SELECT i."state", (SELECT extract(epoch FROM max(c."at")) * 1000 FROM "state_change" c WHERE c."instance_id" = i."id" AND c."from_state" = 'releasing' AND c."to_state" = 'idle') AS "idle_at"
       FROM "instance" i WHERE i."id" = $1`,
      [instanceId],
    )) as { state: string; idle_at: string | null }[];
    if (row?.state === 'idle' && row.idle_at !== null) return Number(row.idle_at) - sentAt;
    if (row?.state !== 'allocated' && row?.state !== 'releasing') throw new Error(`instance ${instanceId} went ${row?.state} after its release`);
    if (now() > deadline) throw new Error(`instance ${instanceId} not idle 30 s after its release`);
    await sleep(10);
  }
}

async function instances(client: Client, show: string): Promise<{ id: number; state: string; hot: boolean; dockerId: string }[]> {
  const reply = await client.call('GET', `/instances?show=${show}&limit=1000`);
  if (reply.status !== 200) throw new Error(`GET /instances answered ${reply.status}`);
  return reply.body;
}

async function waitPool(client: Client, idle: number, hot = 0, timeoutMs = 600000): Promise<void> {
  const deadline = now() + timeoutMs;
  for (;;) {
    const list = (await instances(client, 'deallocated')).filter((instance) => instance.state === 'idle');
    if (list.length >= idle && list.filter((instance) => instance.hot).length >= hot) return;
    if (now() > deadline) throw new Error(`pool did not reach ${idle} idle (${hot} hot) instances: ${list.length}`);
    await sleep(100);
  }
}

// --- the floor's operations ---------------------------------------------------------------

/** unpause + reset on one floor container, recording each step and the sum. */
async function floorTake(floor: Floor, samples: Samples, container: FloorContainer, prefix: string): Promise<void> {
  const unpause = await floor.unpause(container);
  const reset = await floor.reset(container);
  samples.add(`${prefix}floor.unpause`, unpause);
  samples.add(`${prefix}floor.reset`, reset);
  samples.add(`${prefix}floor.unpause+reset`, unpause + reset);
}

/** reset + pause, what a release costs the engine. */
async function floorGiveBack(floor: Floor, samples: Samples, container: FloorContainer, prefix: string): Promise<void> {
  const reset = await floor.reset(container);
  const pause = await floor.pause(container);
  samples.add(`${prefix}floor.pause`, pause);
  samples.add(`${prefix}floor.reset+pause`, reset + pause);
}

/** One floor cycle on one container: take it (unpause + reset), then give it back (reset + pause). */
async function floorCycle(floor: Floor, samples: Samples, container: FloorContainer, prefix: string): Promise<void> {
  await floorTake(floor, samples, container, prefix);
  await floorGiveBack(floor, samples, container, prefix);
}

/** One service cycle: allocate, deallocate, wait until allocatable again. */
async function serviceCycle(client: Client, store: DataSource, samples: Samples, prefix: string, expectHot: boolean, misses: { hot: number }): Promise<void> {
  const handed = await allocate(client);
  if (expectHot && !handed.hot) misses.hot += 1;
  samples.add(`${prefix}alloc`, handed.ms);
  const released = await deallocate(client, handed.id);
  samples.add(`${prefix}dealloc`, released.ms);
  samples.add(`${prefix}allocatable`, await allocatableAfter(store, handed.instanceId, released.sentAt));
}

/** Floor and service one after the other, alternating which goes first, so drift hits both. */
async function interleave(iterations: number, floorStep: (i: number) => Promise<void>, serviceStep: (i: number) => Promise<void>): Promise<void> {
  for (const i of range(iterations)) {
    if (i % 2 === 0) {
      await floorStep(i);
      await serviceStep(i);
    } else {
      await serviceStep(i);
      await floorStep(i);
    }
  }
}

async function floorClosedLoop(floor: Floor, pool: FloorContainer[], clients: number, holdMs: number, seconds: number): Promise<{ cycles: number; errors: number; seconds: number }> {
  const free = [...pool];
  const releases = new Set<Promise<void>>();
  let cycles = 0;
  let errors = 0;
  const started = now();
  const end = started + seconds * 1000;
  await Promise.all(
    range(clients).map(async () => {
      while (now() < end) {
        const container = free.shift();
        if (!container) {
          await sleep(1);
          continue;
        }
        try {
          await floor.unpause(container);
          await floor.reset(container);
          await sleep(holdMs);
          cycles += 1;
        } catch {
          errors += 1;
        }
        // The release goes on in the background, as the service's does.
        const release = floor
          .reset(container)
          .then(() => floor.pause(container))
          .then(() => void free.push(container))
          .catch(() => void (errors += 1));
        releases.add(release);
        void release.finally(() => releases.delete(release));
      }
    }),
  );
  const elapsed = (now() - started) / 1000;
  await Promise.all(releases);
  return { cycles, errors, seconds: elapsed };
}

async function serviceClosedLoop(client: Client, clients: number, holdMs: number, seconds: number): Promise<{ cycles: number; errors: number; seconds: number; firstError?: string }> {
  let cycles = 0;
  let errors = 0;
  let firstError: string | undefined;
  const started = now();
  const end = started + seconds * 1000;
  await Promise.all(
    range(clients).map(async () => {
      while (now() < end) {
        try {
          const handed = await allocate(client);
          await sleep(holdMs);
          await deallocate(client, handed.id);
          cycles += 1;
        } catch (error) {
          errors += 1;
          firstError ??= error instanceof Error ? error.message : String(error);
        }
      }
    }),
  );
  return { cycles, errors, seconds: (now() - started) / 1000, firstError };
}

// --- the run ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = Date.now();
  mkdirSync(OUT, { recursive: true });
  const databaseUrl = benchDatabaseUrl();
  const redisUrl = `${process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'}/2`;
  const docker = new Docker(process.env.DOCKER_HOST ? undefined : { socketPath: '/var/run/docker.sock' });
  const serviceLog = join(OUT, 'service.log');
  writeFileSync(serviceLog, '');
  const baseEnv: Record<string, string> = {
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    QUEUE_PREFIX: NS,
    INSTANCE_NAME_PREFIX: NS,
    NETWORK_MODE: 'host',
    PUBLIC_HOST: '127.0.0.1',
    WORKLOAD_ENV: 'PT_BIND=127.0.0.1',
    WORKLOAD_IMAGE: process.env.WORKLOAD_IMAGE ?? 'pt-instance-manager/ptdemo:latest',
    FILES_CACHE_DIR: `/tmp/${NS}-files`,
    PORT_RANGE: `${PORT_BASE}-${PORT_BASE + 999}`,
    MAX_HOST_CPU_PERCENT: '100',
    MAX_HOST_MEMORY_PERCENT: '100',
    LOG_LEVEL: 'warn',
    ...(process.env.DOCKER_HOST ? { DOCKER_HOST: process.env.DOCKER_HOST } : {}),
  };
  mkdirSync(baseEnv.FILES_CACHE_DIR, { recursive: true });
  const floor = new Floor(loadConfig({ ...baseEnv, INSTANCE_NAME_PREFIX: `${NS}-floor` }), PORT_BASE + 1000);

  log(`${SMOKE ? 'smoke run' : 'full run'}; results in ${OUT}`);
  await removeOwned(docker, NS);
  await floor.removeAll();
  await prepareState(databaseUrl, redisUrl);

  const samples = new Samples();
  const store = new DataSource({ type: 'postgres', url: databaseUrl, extra: { max: 16 } });
  await store.initialize();
  const rss = new RssSampler();
  let service: ServiceProcess | undefined;
  rss.start(() => service?.pid ?? -1);
  const start = async (env: Record<string, string>) => {
    service = await ServiceProcess.start(ROOT, { ...baseEnv, ...env }, serviceLog);
    return service;
  };
  const misses = { hot: 0 };
  // Where the CPU goes in the warm c8 rounds: per cycle (take + give back), floor and service apart.
  const cpu = { floor: new CpuAccount(), service: new CpuAccount() };
  const loops: Record<string, { cycles: number; errors: number; seconds: number; firstError?: string }[]> = { floor: [], service: [] };
  const scaling: ScaleFigure[] = [];
  const memory: Record<string, unknown> = {};

  try {
    log(`floor pool: ${PLAN.pool} containers started, probed and paused`);
    const floorPool = await floor.pool(PLAN.pool);

    // Phase A: a warm (paused) pool, no hot spares.
    log(`service: pool of ${PLAN.pool} paused instances, no hot spares`);
    let svc = await start({ POOL_MIN_IDLE: String(PLAN.pool), POOL_HOT_SPARES: '0', MAX_INSTANCES: String(PLAN.pool) });
    await waitPool(svc.client, PLAN.pool);
    rss.set('idle');
    await sleep(PLAN.idleSeconds * 1000);
    rss.set('load');

    log(`warm allocation at concurrency 1: ${PLAN.c1} cycles, interleaved with the floor`);
    await interleave(
      PLAN.c1,
      (i) => floorCycle(floor, samples, floorPool[i % floorPool.length], 'c1.'),
      () => serviceCycle(svc.client, store, samples, 'warm.c1.', false, misses),
    );

    log(`warm allocation at concurrency ${PLAN.clients}: ${PLAN.c8Rounds} rounds`);
    const c8Floor = floorPool.slice(0, PLAN.clients);
    await interleave(
      PLAN.c8Rounds,
      () =>
        cpu.floor.span(svc.pid, () =>
          Promise.all(c8Floor.map((container) => floorCycle(floor, samples, container, 'c8.'))),
        ).then(() => undefined),
      () =>
        cpu.service.span(svc.pid, () => Promise.all(range(PLAN.clients).map(() => serviceCycle(svc.client, store, samples, 'warm.c8.', false, misses)))).then(() => undefined),
    );

    log(`closed loop allocate -> hold ${PLAN.holdMs} ms -> deallocate, ${PLAN.clients} clients, ${PLAN.loopRepeats} x ${PLAN.loopSeconds} s each`);
    for (const i of range(PLAN.loopRepeats)) {
      const order = i % 2 === 0 ? ['floor', 'service'] : ['service', 'floor'];
      for (const which of order) {
        if (which === 'floor') loops.floor.push(await floorClosedLoop(floor, floorPool, PLAN.clients, PLAN.holdMs, PLAN.loopSeconds));
        else {
          loops.service.push(await serviceClosedLoop(svc.client, PLAN.clients, PLAN.holdMs, PLAN.loopSeconds));
          await waitPool(svc.client, PLAN.pool, 0, 60000);
        }
      }
    }
    rss.set(null);
    await svc.stop();

    // Phase B: the same pool with hot spares.
    log(`service: the same pool with ${PLAN.hot} hot spares`);
    svc = await start({ POOL_MIN_IDLE: String(PLAN.pool), POOL_HOT_SPARES: String(PLAN.hot), MAX_INSTANCES: String(PLAN.pool) });
    await waitPool(svc.client, PLAN.pool, PLAN.hot);
    rss.set('load');
    log(`hot allocation at concurrency 1: ${PLAN.c1} cycles`);
    await interleave(
      PLAN.c1,
      (i) => floorCycle(floor, samples, floorPool[i % floorPool.length], 'hot.'),
      async () => {
        await serviceCycle(svc.client, store, samples, 'hot.c1.', true, misses);
        await waitPool(svc.client, PLAN.pool, PLAN.hot, 30000);
      },
    );
    log(`hot allocation at concurrency ${PLAN.clients}: ${PLAN.c8Rounds} rounds`);
    await interleave(
      PLAN.c8Rounds,
      () => Promise.all(c8Floor.map((container) => floorCycle(floor, samples, container, 'hot8.'))).then(() => undefined),
      async () => {
        await Promise.all(range(PLAN.clients).map(() => serviceCycle(svc.client, store, samples, 'hot.c8.', true, misses)));
        await waitPool(svc.client, PLAN.pool, PLAN.hot, 30000);
      },
    );
    rss.set(null);

    // Phase C: an empty pool (cold allocations), then 10 -> N idle instances.
    await svc.stop();
    const maxScale = Math.max(...PLAN.scale);
    log('service: empty pool');
    svc = await start({ POOL_MIN_IDLE: '0', POOL_HOT_SPARES: '0', MAX_INSTANCES: String(maxScale + 10) });
    for (const instance of await instances(svc.client, 'running')) await svc.client.call('DELETE', `/instances/${instance.id}`);
    const waitEmpty = async () => {
      const deadline = now() + 60000;
      while ((await instances(svc.client, 'running')).length > 0) {
        if (now() > deadline) throw new Error('instances still running 60 s after their deletion');
        await sleep(50);
      }
    };
    await waitEmpty();
    rss.set('load');
    log(`cold allocation: ${PLAN.cold} cycles, interleaved with create + start + first probe`);
    await interleave(
      PLAN.cold,
      async () => {
        const cold = await floor.cold();
        samples.add('floor.cold', cold.total);
        samples.add('floor.cold.create', cold.create);
        samples.add('floor.cold.start', cold.start);
        samples.add('floor.cold.probe', cold.probe);
      },
      async () => {
        const handed = await allocate(svc.client);
        samples.add('cold.alloc', handed.ms);
        const removed = await svc.client.call('DELETE', `/instances/${handed.instanceId}`);
        if (removed.status !== 200) throw new Error(`DELETE /instances/${handed.instanceId} answered ${removed.status}`);
        await waitEmpty();
      },
    );
    rss.set(null);

    let firstAvailable = NaN;
    let firstIdle = 0;
    for (const idle of PLAN.scale) {
      let have = (await instances(svc.client, 'deallocated')).length;
      log(`scaling: ${idle} idle instances (creating ${idle - have})`);
      while (have < idle) {
        const count = Math.min(100, idle - have);
        const created = await svc.client.call('POST', '/instances?wait=true&timeout=600', { count }, 700000);
        if (created.status !== 201) throw new Error(`POST /instances answered ${created.status}: ${JSON.stringify(created.body)}`);
        have += count;
      }
      await waitPool(svc.client, idle);
      await sleep(1000);
      const list = await instances(svc.client, 'deallocated');
      const ids = list.map((instance) => instance.dockerId);
      const cgroups = ids.map(containerMemoryMb).filter((value): value is { usage: number; anon: number } => value !== null);
      const shims = shimRssMb(ids);
      const available = hostAvailableMb();
      if (Number.isNaN(firstAvailable)) {
        firstAvailable = available;
        firstIdle = idle;
      }
      rss.set(`idle-${idle}`);
      const prefix = `scale.${idle}.`;
      await interleave(
        PLAN.scaleIters,
        (i) => floorCycle(floor, samples, floorPool[i % floorPool.length], prefix),
        () => serviceCycle(svc.client, store, samples, prefix, false, misses),
      );
      const passes: number[] = [];
      const passHttp: number[] = [];
      for (const _ of range(PLAN.monitorPasses)) {
        const pass = await svc.client.call('POST', '/admin/monitor', undefined, 70000);
        if (pass.status !== 200) throw new Error(`POST /admin/monitor answered ${pass.status}: ${JSON.stringify(pass.body)}`);
        passes.push(pass.body.durationMs);
        passHttp.push(pass.ms);
      }
      const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / Math.max(1, values.length);
      scaling.push({
        idle,
        alloc: summarize(samples.get(`${prefix}alloc`)),
        floorUnpauseReset: summarize(samples.get(`${prefix}floor.unpause+reset`)),
        monitorPassMs: summarize(passes),
        monitorRequestMs: summarize(passHttp),
        containerCgroupMb: { mean: round(mean(cgroups.map((c) => c.usage)), 2), anonMean: round(mean(cgroups.map((c) => c.anon)), 2), counted: cgroups.length },
        shimRssMb: { mean: round(mean(shims), 2), counted: shims.length },
        hostAvailableMb: round(available, 0),
        hostCostPerInstanceMb: idle > firstIdle ? round((firstAvailable - available) / (idle - firstIdle), 2) : null,
        serviceRssMb: round(svc.rssMb(), 1),
      });
      rss.set(null);
    }
    for (const instance of await instances(svc.client, 'running')) await svc.client.call('DELETE', `/instances/${instance.id}`);
    await waitEmpty();
    await svc.stop();
    Object.assign(memory, { serviceRss: rss.report() });
  } finally {
    await store.destroy();
    rss.stop();
    await service?.stop();
    await floor.removeAll();
    await removeOwned(docker, NS);
  }

  // --- figures, ratios and targets ---------------------------------------------------------
  const s = (name: string) => samples.summary(name);
  const rows: Row[] = [
    { name: 'warm allocation c1', service: s('warm.c1.alloc'), floorName: 'unpause + reset c1', floor: s('c1.floor.unpause+reset') },
    { name: `warm allocation c${PLAN.clients}`, service: s('warm.c8.alloc'), floorName: `unpause + reset c${PLAN.clients}`, floor: s('c8.floor.unpause+reset') },
    { name: 'hot allocation c1', service: s('hot.c1.alloc'), floorName: 'unpause c1', floor: s('hot.floor.unpause') },
    { name: `hot allocation c${PLAN.clients}`, service: s('hot.c8.alloc'), floorName: `unpause c${PLAN.clients}`, floor: s('hot8.floor.unpause') },
    { name: 'deallocation c1', service: s('warm.c1.dealloc'), floorName: 'pause c1', floor: s('c1.floor.pause') },
    { name: `deallocation c${PLAN.clients}`, service: s('warm.c8.dealloc'), floorName: `pause c${PLAN.clients}`, floor: s('c8.floor.pause') },
    { name: 'allocatable again c1', service: s('warm.c1.allocatable'), floorName: 'reset + pause c1', floor: s('c1.floor.reset+pause') },
    { name: `allocatable again c${PLAN.clients}`, service: s('warm.c8.allocatable'), floorName: `reset + pause c${PLAN.clients}`, floor: s('c8.floor.reset+pause') },
    { name: 'cold allocation', service: s('cold.alloc'), floorName: 'create + start + probe', floor: s('floor.cold') },
  ];
  const total = (list: { cycles: number; seconds: number }[]) => list.reduce((a, b) => a + b.cycles, 0) / Math.max(1e-9, list.reduce((a, b) => a + b.seconds, 0));
  const loopFloor = total(loops.floor);
  const loopService = total(loops.service);
  const loopErrors = loops.service.reduce((a, b) => a + b.errors, 0);
  const first = PLAN.scale[0];
  const last = PLAN.scale[PLAN.scale.length - 1];
  const scaleFirst = s(`scale.${first}.alloc`);
  const scaleLast = s(`scale.${last}.alloc`);
  const lastMonitor = scaling[scaling.length - 1]?.monitorPassMs.p50 ?? NaN;
  const rssReport = rss.report();
  const loadRss = Math.max(...Object.entries(rssReport).filter(([phase]) => phase !== 'idle').map(([, figure]) => figure.maxMb));
  const ratio = (row: number, key: 'p50' | 'p99') => rows[row].service[key] / rows[row].floor[key];
  const targets: Target[] = [
    target('warm allocation p50 / floor unpause+reset p50, c1', ratio(0, 'p50'), 'max', 1.5),
    target(`warm allocation p50 / floor unpause+reset p50, c${PLAN.clients}`, ratio(1, 'p50'), 'max', 1.5),
    target(`warm allocation p99 / floor unpause+reset p99, c${PLAN.clients}`, ratio(1, 'p99'), 'max', 2),
    target('hot allocation p50 / floor unpause p50, c1', ratio(2, 'p50'), 'max', 0.5),
    target(`hot allocation p50 / floor unpause p50, c${PLAN.clients}`, ratio(3, 'p50'), 'max', 0.5),
    target('deallocation p50 / floor pause p50, c1', ratio(4, 'p50'), 'max', 1),
    target('allocatable again p50 / floor reset+pause p50, c1', ratio(6, 'p50'), 'max', 1.3),
    target('cold allocation p50 / floor create+start+probe p50', ratio(8, 'p50'), 'max', 1.2),
    target('closed loop: service / floor allocations per second', loopService / loopFloor, 'min', 0.85),
    target('closed loop: service errors', loopErrors, 'max', 0, ''),
    target(`allocation p50 at ${last} idle / at ${first} idle`, scaleLast.p50 / scaleFirst.p50, 'max', 1.2),
    target(
      `the same, each over its floor (unpause+reset at that size)`,
      scaleLast.p50 / s(`scale.${last}.floor.unpause+reset`).p50 / (scaleFirst.p50 / s(`scale.${first}.floor.unpause+reset`).p50),
      'max',
      1.2,
    ),
    target(`monitor pass at ${last} idle instances (p50)`, lastMonitor, 'max', 1000, ' ms'),
    target('service resident memory under load (max)', loadRss, 'max', 250, ' MB'),
  ];

  const result = {
    run: {
      smoke: SMOKE,
      startedAt: new Date(started).toISOString(),
      seconds: round((Date.now() - started) / 1000, 1),
      plan: PLAN,
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, memoryGiB: round(totalmem() / 2 ** 30, 1), node: process.version, docker: engineVersion() },
      commit: gitCommit(),
    },
    latencyMs: Object.fromEntries(samples.names().map((name) => [name, samples.summary(name)])),
    comparisons: rows.map((row) => ({ ...row, ratioP50: round(row.service.p50 / row.floor.p50, 2), ratioP99: round(row.service.p99 / row.floor.p99, 2) })),
    hotMisses: misses.hot,
    cpuMsPerCycleC8: { floor: cpu.floor.perOperation(cpu.floor.spans * PLAN.clients), service: cpu.service.perOperation(cpu.service.spans * PLAN.clients) },
    closedLoop: {
      holdMs: PLAN.holdMs,
      clients: PLAN.clients,
      floorPerSecond: round(loopFloor, 1),
      servicePerSecond: round(loopService, 1),
      ratio: round(loopService / loopFloor, 2),
      runs: loops,
    },
    scaling,
    memory: { serviceRssMb: rssReport, ...memory },
    targets,
  };
  const name = SMOKE ? 'smoke' : 'latest';
  writeFileSync(join(OUT, `${name}.json`), `${JSON.stringify(result, null, 2)}\n`);
  const scalePoints: ScalePoint[] = scaling.map((point) => ({
    idle: point.idle,
    allocP50: point.alloc.p50,
    floorP50: point.floorUnpauseReset.p50,
    monitorMs: point.monitorPassMs.p50,
  }));
  writeChart(OUT, name, chartSvg(`pt-instance-manager vs the bare engine (${result.run.startedAt.slice(0, 10)}, ${cpus().length} cores)`, rows, scalePoints));

  console.log(`\nLatency (ms), service over HTTP vs the floor straight through dockerode, interleaved in one run\n`);
  console.log(latencyTable(rows));
  console.log(`\nHot allocations that found no hot spare: ${misses.hot}`);
  console.log(`CPU ms per warm cycle at c${PLAN.clients} (allocate + release), by process group:`);
  console.log(`  floor:   ${JSON.stringify(result.cpuMsPerCycleC8.floor)}`);
  console.log(`  service: ${JSON.stringify(result.cpuMsPerCycleC8.service)}`);
  console.log(`Closed loop (${PLAN.clients} clients, hold ${PLAN.holdMs} ms): service ${loopService.toFixed(1)}/s with ${loopErrors} errors, floor ${loopFloor.toFixed(1)}/s`);
  console.log('\nScaling (idle instances: warm allocation p50 / floor p50 / monitor pass p50 / service RSS)');
  for (const point of scaling) {
    console.log(
      `  ${String(point.idle).padStart(4)}: ${point.alloc.p50.toFixed(1)} ms / ${point.floorUnpauseReset.p50.toFixed(1)} ms / ` +
        `${point.monitorPassMs.p50.toFixed(0)} ms / ${point.serviceRssMb} MB; per instance: cgroup ${point.containerCgroupMb.mean} MB ` +
        `(anon ${point.containerCgroupMb.anonMean}), shim ${point.shimRssMb.mean} MB, host ${point.hostCostPerInstanceMb ?? '-'} MB`,
    );
  }
  console.log(`\nService RSS (MB) by phase: ${JSON.stringify(rssReport)}`);
  console.log(`\nTargets\n${targetTable(targets)}`);
  console.log(`\nbench: ${result.run.seconds} s; wrote ${join(OUT, `${name}.json`)}, ${name}.png and ${name}.svg`);
}

function engineVersion(): string | undefined {
  try {
    return execFileSync('docker', ['version', '--format', '{{.Server.Version}}'], { encoding: 'utf8', timeout: 5000 }).trim();
  } catch {
    return undefined;
  }
}

function gitCommit(): string | undefined {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8', timeout: 5000 }).trim();
  } catch {
    return undefined;
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(`bench: failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    process.exit(1);
  },
);
