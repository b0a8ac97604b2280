import { Env } from '../../src/config/env-reader';

/** Container names, the owner label and queue keys of this test run (several runs can share one engine). */
export const TEST_NAMESPACE = process.env.TEST_NAMESPACE ?? 'ptim-test';

/** First of the host ports this test run uses (200 for the services, 41900-41999 style block for the driver). */
export const PORT_BASE = Number(process.env.TEST_PORT_BASE ?? 41000);

/** Settings shared by every test: the test database, Redis db 1, host networking on loopback. */
export function testEnv(overrides: Env = {}): Env {
  const database = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://ptim:ptim@127.0.0.1:5432/ptim_test';
  return {
    DATABASE_URL: database,
    REDIS_URL: process.env.TEST_REDIS_URL ?? `${process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'}/1`,
    QUEUE_PREFIX: TEST_NAMESPACE,
    INSTANCE_NAME_PREFIX: TEST_NAMESPACE,
    NETWORK_MODE: 'host',
    PUBLIC_HOST: '127.0.0.1',
    HTTP_HOST: '127.0.0.1',
    WORKLOAD_ENV: 'PT_BIND=127.0.0.1',
    WORKLOAD_IMAGE: process.env.WORKLOAD_IMAGE ?? 'pt-instance-manager/ptdemo:latest',
    FILES_CACHE_DIR: process.env.TEST_FILES_DIR ?? `/tmp/${TEST_NAMESPACE}-files`,
    PORT_RANGE: `${PORT_BASE}-${PORT_BASE + 199}`,
    MAX_HOST_CPU_PERCENT: '100',
    MAX_HOST_MEMORY_PERCENT: '100',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
    MONITOR_INTERVAL_MS: '1000',
    DOCKER_HOST: process.env.DOCKER_HOST,
    ...overrides,
  };
}
