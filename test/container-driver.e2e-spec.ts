import { PORT_BASE, TEST_NAMESPACE } from './support/env';
import { loadConfig } from '../src/config/app-config';
import { ContainerDriverError, INSTANCE_LABEL, OWNER_LABEL } from '../src/container-driver/container-driver';
import { DockerContainerDriver } from '../src/container-driver/docker-container.driver';
import { containerSpec } from '../src/instances/container-spec';
import { WorkloadClient } from '../src/instances/workload-client';
import { testEnv } from './support/env';
import { eventually, removeTestContainers } from './support/harness';

describe('DockerContainerDriver against the real engine', () => {
  const config = loadConfig(testEnv({ PORT_RANGE: `${PORT_BASE + 900}-${PORT_BASE + 999}` }));
  const driver = new DockerContainerDriver(config);
  const client = new WorkloadClient(config, driver);
  const ports = { ipc: PORT_BASE + 900, vnc: PORT_BASE + 901 };
  let id = '';

  beforeAll(async () => {
    await removeTestContainers();
  });

  afterAll(async () => {
    driver.onModuleDestroy();
    await removeTestContainers();
  });

  it('creates and starts a hardened, labelled container of the demo image', async () => {
    expect(await driver.imageExists('local', config.workload.image)).toBe(true);
    id = await driver.create('local', containerSpec(config, { id: 9001, containerName: `${TEST_NAMESPACE}-driver`, ports }));
    await driver.start('local', id);
    const info = await driver.inspect('local', id);
    expect(info).toMatchObject({ running: true, paused: false, name: `${TEST_NAMESPACE}-driver` });
    expect(info.labels).toMatchObject({ [OWNER_LABEL]: TEST_NAMESPACE, [INSTANCE_LABEL]: '9001' });
    const raw = await driver['client']('local').getContainer(id).inspect();
    expect(raw.HostConfig.CapDrop).toEqual(['ALL']);
    expect(raw.HostConfig.SecurityOpt).toEqual(['no-new-privileges']);
    expect(raw.HostConfig.ReadonlyRootfs).toBe(true);
    expect(raw.HostConfig.Privileged).toBe(false);
    expect(raw.HostConfig.Memory).toBe(config.workload.memoryMb * 1024 * 1024);
    expect(raw.Mounts.map((mount) => [mount.Destination, mount.RW])).toContainEqual(['/files', false]);
    const target = { instanceId: 9001, host: 'local', dockerId: id, ports };
    await eventually(() => client.probe(target).then(() => true), 10000, 'the app to answer');
  });

  it('pauses and unpauses: a paused app does not answer, an unpaused one does', async () => {
    const target = { instanceId: 9001, host: 'local', dockerId: id, ports };
    await driver.pause('local', id);
    expect(await driver.inspect('local', id)).toMatchObject({ paused: true, running: false, status: 'paused' });
    await expect(client.probe(target, 300)).rejects.toThrow(/no answer/);
    await driver.unpause('local', id);
    expect(await driver.inspect('local', id)).toMatchObject({ paused: false, running: true });
    await expect(client.probe(target)).resolves.toBe('PONG');
  });

  it('treats a start, pause or unpause that finds the container already so as done (a job run twice)', async () => {
    const target = { instanceId: 9001, host: 'local', dockerId: id, ports };
    await driver.start('local', id); // 304 from the engine
    await driver.pause('local', id);
    await driver.pause('local', id); // 409 "already paused"
    expect(await driver.inspect('local', id)).toMatchObject({ paused: true });
    await driver.unpause('local', id);
    await driver.unpause('local', id); // "not paused"
    expect(await driver.inspect('local', id)).toMatchObject({ paused: false, running: true });
    await expect(client.probe(target)).resolves.toBe('PONG');
  });

  it('still fails to unpause or pause a container that is not running', async () => {
    const stopped = await driver.create('local', containerSpec(config, { id: 9002, containerName: `${TEST_NAMESPACE}-driver-stopped`, ports: { ipc: PORT_BASE + 902, vnc: PORT_BASE + 903 } }));
    try {
      await expect(driver.unpause('local', stopped)).rejects.toThrow(/is not paused/);
      await expect(driver.pause('local', stopped)).rejects.toThrow(/is not running/);
    } finally {
      await driver.remove('local', stopped);
    }
  });

  it('runs a command inside the container with exec and reports its exit code and output', async () => {
    const ok = await driver.exec('local', id, ['/ptdemo', 'ctl', '--port', String(PORT_BASE + 900), 'STATUS'], 5000);
    expect(ok.exitCode).toBe(0);
    expect(JSON.parse(ok.output.trim())).toMatchObject({ loaded: expect.any(String) });
    const bad = await driver.exec('local', id, ['/ptdemo', 'ctl', '--port', String(PORT_BASE + 900), 'LOAD', '/nope.pkt'], 5000);
    expect(bad.exitCode).not.toBe(0);
  });

  it('lists containers by label and reports host usage', async () => {
    const listed = await driver.list('local', { [OWNER_LABEL]: TEST_NAMESPACE });
    expect(listed.map((container) => container.id)).toContain(id);
    const usage = await driver.usage('local');
    expect(usage.memoryTotalBytes).toBeGreaterThan(0);
    expect(usage.memoryUsedPercent).toBeGreaterThan(0);
    expect(usage.memoryUsedPercent).toBeLessThanOrEqual(100);
  });

  it('removes the container; removing it again is not an error; inspecting it is a 404', async () => {
    await driver.remove('local', id);
    await driver.remove('local', id);
    const error = await driver.inspect('local', id).catch((failure: unknown) => failure);
    expect(error).toBeInstanceOf(ContainerDriverError);
    expect((error as ContainerDriverError).notFound).toBe(true);
    expect(await driver.list('local', { [INSTANCE_LABEL]: '9001' })).toEqual([]);
  });

  it('fails a call with a clear error, in bounded time, when the engine cannot be reached', async () => {
    const offline = new DockerContainerDriver(loadConfig(testEnv({ DOCKER_HOST: 'unix:///tmp/ptim-no-such-docker.sock', DOCKER_TIMEOUT_MS: '500' })));
    const started = Date.now();
    await expect(offline.ping('local')).rejects.toThrow(/ping local/);
    expect(Date.now() - started).toBeLessThan(3000);
  });
});
