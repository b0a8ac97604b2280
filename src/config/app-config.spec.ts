import { loadConfig, parseAction } from './app-config';
import { ConfigError } from './env-reader';

const base = { DATABASE_URL: 'postgres://u:p@127.0.0.1:5432/db' };

function errorOf(env: Record<string, string>): string {
  try {
    loadConfig({ ...base, ...env });
  } catch (error) {
    if (error instanceof ConfigError) return error.message;
    throw error;
  }
  throw new Error('configuration was accepted');
}

describe('loadConfig', () => {
  it('accepts the defaults with only DATABASE_URL set', () => {
    const config = loadConfig(base);
    expect(config.role).toBe('all');
    expect(config.http.port).toBe(8080);
    expect(config.workload.ports).toEqual({ ipc: 39000, vnc: 5900 });
    expect(config.limits.portRange).toEqual([40000, 40999]);
    expect(config.docker.hosts).toEqual([
      { name: 'local', url: 'unix:///var/run/docker.sock', publicAddress: '127.0.0.1', probeAddress: '127.0.0.1' },
    ]);
  });

  it('names the missing variable', () => {
    expect(() => loadConfig({})).toThrow('DATABASE_URL is required');
  });

  it.each([
    [{ HTTP_PORT: 'abc' }, 'HTTP_PORT must be an integer between 1 and 65535 (got "abc")'],
    [{ HTTP_PORT: '70000' }, 'HTTP_PORT must be an integer between 1 and 65535 (got "70000")'],
    [{ ROLE: 'boss' }, 'ROLE must be one of api, worker, all (got "boss")'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL must be a URL with scheme postgres or postgresql'],
    [{ REDIS_URL: 'not a url' }, 'REDIS_URL must be a URL with scheme redis or rediss'],
    [{ PORT_RANGE: '500-400' }, 'PORT_RANGE must be a range FROM-TO'],
    [{ WORKLOAD_PORTS: 'ipc=0' }, 'WORKLOAD_PORTS must be a list like ipc=39000'],
    [{ PROBE: 'smoke-signal' }, 'PROBE must be none, tcp[:PORTNAME]'],
    [{ PROBE: 'tcp:nosuchport' }, 'PROBE must be none'],
    [{ MAX_HOST_MEMORY_PERCENT: '120' }, 'MAX_HOST_MEMORY_PERCENT must be a number between 1 and 100'],
    [{ TRUST_PROXY: 'maybe' }, 'TRUST_PROXY must be true or false'],
    [{ LEASE_DEFAULT_SECONDS: '100', LEASE_MAX_SECONDS: '10' }, 'LEASE_DEFAULT_SECONDS must be at most LEASE_MAX_SECONDS'],
    [{ DOCKER_HOSTS: 'a=unix:///x.sock,a=unix:///y.sock' }, 'DOCKER_HOSTS must be a list like'],
    [{ FILES_ALLOWED_HOSTS: 'files.example.org,http://x/' }, 'FILES_ALLOWED_HOSTS must be a list of host[:port] entries'],
  ])('rejects %j with a message naming it', (env, expected) => {
    expect(errorOf(env)).toContain(expected);
  });

  it('accepts an allow-list of hosts with and without ports', () => {
    expect(loadConfig({ ...base, FILES_ALLOWED_HOSTS: 'files.example.org, 10.0.0.5:8080,[::1]' }).files.allowedHosts).toEqual([
      'files.example.org',
      '10.0.0.5:8080',
      '[::1]',
    ]);
  });

  it('reads several Docker hosts with their public addresses', () => {
    const config = loadConfig({ ...base, DOCKER_HOSTS: 'a=unix:///var/run/docker.sock@10.0.0.1,b=tcp://10.0.0.2:2375' });
    expect(config.docker.hosts.map((host) => [host.name, host.publicAddress])).toEqual([
      ['a', '10.0.0.1'],
      ['b', '10.0.0.2'],
    ]);
  });
});

describe('parseAction', () => {
  const ports = { ipc: 39000, vnc: 5900 };
  it('reads each kind of action', () => {
    expect(parseAction('X', 'line:PING=>PONG', ports)).toEqual({ kind: 'line', port: 'ipc', send: 'PING', expect: 'PONG' });
    expect(parseAction('X', 'line:vnc:HELLO=>RFB', ports)).toEqual({ kind: 'line', port: 'vnc', send: 'HELLO', expect: 'RFB' });
    expect(parseAction('X', 'http:/health', ports)).toEqual({ kind: 'http', port: 'ipc', path: '/health' });
    expect(parseAction('X', 'tcp', ports)).toEqual({ kind: 'tcp', port: 'ipc' });
    expect(parseAction('X', 'exec:/ptdemo ctl PING', ports)).toEqual({ kind: 'exec', command: ['/ptdemo', 'ctl', 'PING'] });
    expect(parseAction('X', 'exec:["/bin/sh","-c","echo a b"]', ports)).toEqual({ kind: 'exec', command: ['/bin/sh', '-c', 'echo a b'] });
    expect(parseAction('X', 'none', ports)).toEqual({ kind: 'none' });
  });
});
