import { TEST_NAMESPACE } from './env';
import 'reflect-metadata';
import { INestApplication } from '@nestjs/common';
import { NestExpressApplication } from '@nestjs/platform-express';
import { Test } from '@nestjs/testing';
import Docker from 'dockerode';
import Redis from 'ioredis';
import { mkdirSync } from 'node:fs';
import { AddressInfo } from 'node:net';
import { DataSource } from 'typeorm';
import { AppModule } from '../../src/app.module';
import { AppConfig, loadConfig } from '../../src/config/app-config';
import { Env } from '../../src/config/env-reader';
import { OWNER_LABEL } from '../../src/container-driver/container-driver';
import { configureHttp, logLevels } from '../../src/main';
import { testEnv } from './env';

export interface Harness {
  app: INestApplication;
  url: string;
  config: AppConfig;
  dataSource: DataSource;
  docker: Docker;
  close(): Promise<void>;
}

export const docker = new Docker(process.env.DOCKER_HOST ? undefined : { socketPath: '/var/run/docker.sock' });

/** Removes every container of the test deployment, whatever the database says. */
export async function removeTestContainers(owner = TEST_NAMESPACE): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: { label: [`${OWNER_LABEL}=${owner}`] } });
  await Promise.all(containers.map((container) => docker.getContainer(container.Id).remove({ force: true }).catch(() => undefined)));
}

/** Empties every table and the test queues, and removes the test containers: each test file starts from nothing. */
export async function resetState(env: Env = testEnv()): Promise<void> {
  await removeTestContainers(env.INSTANCE_NAME_PREFIX);
  const dataSource = new DataSource({ type: 'postgres', url: env.DATABASE_URL });
  await dataSource.initialize();
  await dataSource.query(
    'TRUNCATE "state_change", "allocation", "port", "instance", "cached_file", "host_status", "leader_lease" RESTART IDENTITY CASCADE',
  );
  await dataSource.destroy();
  const redis = new Redis(env.REDIS_URL!);
  const keys = await redis.keys(`${env.QUEUE_PREFIX}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
}

/** Boots the whole service (role all by default) in this process on a free loopback port. */
export async function startService(overrides: Env = {}, options: { reset?: boolean } = {}): Promise<Harness> {
  const env = testEnv(overrides);
  if (options.reset !== false) await resetState(env);
  mkdirSync(env.FILES_CACHE_DIR!, { recursive: true });
  const config = loadConfig(env);
  const moduleRef = await Test.createTestingModule({ imports: [AppModule.forRole(config)] }).compile();
  const app = moduleRef.createNestApplication<NestExpressApplication>({ logger: logLevels(config.logLevel), bodyParser: false });
  app.useLogger(logLevels(config.logLevel));
  configureHttp(app, config);
  app.enableShutdownHooks();
  await app.listen(0, '127.0.0.1');
  const address = app.getHttpServer().address() as AddressInfo;
  return {
    app,
    url: `http://127.0.0.1:${address.port}`,
    config,
    dataSource: app.get(DataSource),
    docker,
    close: () => app.close(),
  };
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns a value (not undefined/false) or the time runs out. */
export async function eventually<T>(check: () => Promise<T | undefined | null | false>, timeoutMs = 30000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== null && value !== false) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await sleep(100);
  }
}
