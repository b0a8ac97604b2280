import { loadConfig } from '../config/app-config';
import { INSTANCE_LABEL, OWNER_LABEL } from '../container-driver/container-driver';
import { containerSpec } from './container-spec';

const base = { DATABASE_URL: 'postgres://u:p@127.0.0.1/db', FILES_CACHE_DIR: '/var/cache/ptim' };
const instance = { id: 7, containerName: 'ptim-7', ports: { ipc: 40010, vnc: 40011 } };

describe('containerSpec', () => {
  it('publishes the named container ports on the instance ports in bridge mode', () => {
    const spec = containerSpec(loadConfig(base), instance);
    expect(spec.networkMode).toBe('bridge');
    expect(spec.publish).toEqual({ 39000: 40010, 5900: 40011 });
    expect(spec.env).toEqual(expect.arrayContaining(['PT_PORT=39000', 'VNC_PORT=5900']));
  });

  it('tells the app its host ports with host networking, and publishes nothing', () => {
    const spec = containerSpec(loadConfig({ ...base, NETWORK_MODE: 'host', WORKLOAD_ENV: 'PT_BIND=127.0.0.1' }), instance);
    expect(spec.publish).toEqual({});
    expect(spec.env).toEqual(['PT_BIND=127.0.0.1', 'PT_PORT=40010', 'VNC_PORT=40011']);
  });

  it('labels the container as this deployment\'s and hardens it within the profile limits', () => {
    const spec = containerSpec(
      loadConfig({ ...base, INSTANCE_NAME_PREFIX: 'lab', WORKLOAD_MEMORY_MB: '512', WORKLOAD_CPUS: '0.5', WORKLOAD_DATA_VOLUME: 'pt-install:/opt/pt' }),
      instance,
    );
    expect(spec.labels).toEqual({ [OWNER_LABEL]: 'lab', [INSTANCE_LABEL]: '7' });
    expect(spec.memoryBytes).toBe(512 * 1024 * 1024);
    expect(spec.nanoCpus).toBe(500000000);
    expect(spec.readOnlyRootfs).toBe(true);
    expect(spec.tmpfs).toEqual(['/tmp']);
    expect(spec.readOnlyMounts).toEqual(['/var/cache/ptim:/files', 'pt-install:/opt/pt']);
  });
});
