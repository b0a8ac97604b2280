import { dataSourceOptions } from './data-source-options';

describe('dataSourceOptions', () => {
  it('reaches a local Postgres over its socket when the URL names one', () => {
    const options = dataSourceOptions('postgres://ptim:ptim@127.0.0.1:5432/ptim?host=/var/run/postgresql');
    expect(options).toMatchObject({ type: 'postgres', host: '/var/run/postgresql', username: 'ptim', password: 'ptim', database: 'ptim' });
  });

  it('reads host, port and escaped credentials of a TCP URL', () => {
    const options = dataSourceOptions('postgresql://app%40corp:p%40ss%3Aword@db.example.org:6543/lab%20db');
    expect(options).toMatchObject({ host: 'db.example.org', port: 6543, username: 'app@corp', password: 'p@ss:word', database: 'lab db' });
  });

  it('turns TLS on when the URL asks for it', () => {
    const ssl = (url: string) => (dataSourceOptions(url) as { ssl?: unknown }).ssl;
    expect(ssl('postgres://u:p@db.example.org/app?sslmode=verify-full')).toBeDefined();
    expect(ssl('postgres://u:p@db.example.org/app')).toBeUndefined();
  });
});
