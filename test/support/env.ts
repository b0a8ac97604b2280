import { Env } from '../../src/config/env-reader';

/** Settings shared by every test: the test database, Redis db 1, host networking on loopback. */
export function testEnv(overrides: Env = {}): Env {
  const database = process.env.TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://ptim:ptim@127.0.0.1:5432/ptim_test';
  return {
    DATABASE_URL: database,
    REDIS_URL: process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/1',
    QUEUE_PREFIX: 'ptim-test',
    INSTANCE_NAME_PREFIX: 'ptim-test',
    NETWORK_MODE: 'host',
    PUBLIC_HOST: '127.0.0.1',
    HTTP_HOST: '127.0.0.1',
    WORKLOAD_ENV: 'PT_BIND=127.0.0.1',
    WORKLOAD_IMAGE: process.env.WORKLOAD_IMAGE ?? 'pt-instance-manager/ptdemo:latest',
    FILES_CACHE_DIR: process.env.TEST_FILES_DIR ?? '/tmp/ptim-test-files',
    PORT_RANGE: '41000-41199',
    MAX_HOST_CPU_PERCENT: '100',
    MAX_HOST_MEMORY_PERCENT: '100',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
    MONITOR_INTERVAL_MS: '1000',
    DOCKER_HOST: process.env.DOCKER_HOST,
    ...overrides,
  };
}
