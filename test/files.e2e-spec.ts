import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import { join } from 'node:path';
import request from 'supertest';
import { appStatus, askApp } from './support/app-client';
import { eventually, Harness, startService } from './support/harness';
import { violations } from './support/invariants';

const MAX_BYTES = 4096;
const TIMEOUT_MS = 500;

interface FileServer {
  server: Server;
  port: number;
  /** GET requests seen, by path. */
  gets: Map<string, number>;
  url(path: string): string;
}

type Handler = (req: IncomingMessage, res: ServerResponse, server: FileServer) => void;

async function fileServer(handler: Handler): Promise<FileServer> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const source: FileServer = { server, port, gets: new Map(), url: (path) => `http://127.0.0.1:${port}${path}` };
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '/';
    if (req.method === 'GET') source.gets.set(path, (source.gets.get(path) ?? 0) + 1);
    handler(req, res, source);
  });
  return source;
}

async function stopServer(source: FileServer | undefined): Promise<void> {
  if (!source) return;
  source.server.closeAllConnections();
  await new Promise((resolve) => source.server.close(resolve));
}

/**
 * A loopback port nothing listens on: port 1 (tcpmux), privileged and outside the ephemeral range,
 * so no listener of this run can be given it (a port freed by a probe listener could be).
 */
const CLOSED_PORT = 1;

const CONTENT: Record<string, string> = {
  '/lab1.pkt': 'lab one: two routers and a switch\n',
  '/lab2.pkt': 'lab two: a small campus network\n',
  '/lab3.pkt': 'lab three: reached through a redirect\n',
  '/lab4.pkt': 'lab four: fetched by two processes at once\n',
};
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const encoded = (url: string) => `/files/${encodeURIComponent(url)}`;

describe('files', () => {
  let service: Harness;
  let source: FileServer;
  let other: FileServer;
  let unreachable: number;
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, fn: () => void) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  };

  /** Rows and directory entries (temporary files included) of the cache. */
  const snapshot = async () => ({
    rows: (await request(service.url).get('/files').expect(200)).body as unknown[],
    entries: readdirSync(service.config.files.cacheDir).sort(),
  });

  const idle = (instanceId: number) =>
    eventually(async () => {
      const { body } = await request(service.url).get(`/instances/${instanceId}`).expect(200);
      return body.state === 'idle' ? body : undefined;
    }, 15000, `instance ${instanceId} idle`);

  beforeAll(async () => {
    source = await fileServer((req, res, self) => {
      const path = req.url ?? '/';
      const send = (body: string, type = 'application/octet-stream') => {
        res.writeHead(200, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
      };
      if (path === '/lab1.pkt' || path === '/lab4.pkt') {
        // Slow enough that concurrent requests overlap.
        later(300, () => send(CONTENT[path]));
      } else if (path in CONTENT) {
        send(CONTENT[path]);
      } else if (path === '/big-chunked') {
        res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
        for (let i = 0; i < 3; i += 1) res.write(Buffer.alloc(2048, 'x'));
        res.end();
      } else if (path === '/big-declared') {
        send('y'.repeat(MAX_BYTES + 1));
      } else if (path === '/slow') {
        later(TIMEOUT_MS * 3, () => send('too late'));
      } else if (path === '/trickle') {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        let sent = 0;
        const drip = () => {
          if (res.destroyed) return;
          if (sent === 20) return void res.end();
          sent += 1;
          res.write('.');
          later(100, drip);
        };
        drip();
      } else if (path === '/partial') {
        res.writeHead(200, { 'Content-Length': 1000 });
        res.write('z'.repeat(100));
        later(50, () => res.socket?.destroy());
      } else if (path === '/hang-up') {
        req.socket.destroy();
      } else if (path === '/redirect-ok') {
        res.writeHead(302, { Location: '/lab3.pkt' });
        res.end();
      } else if (path === '/redirect-away') {
        res.writeHead(302, { Location: other.url('/x.pkt') });
        res.end();
      } else if (path === '/redirect-ftp') {
        res.writeHead(301, { Location: `ftp://127.0.0.1:${self.port}/lab1.pkt` });
        res.end();
      } else if (path.startsWith('/loop/')) {
        res.writeHead(307, { Location: `/loop/${Number(path.slice(6)) + 1}` });
        res.end();
      } else {
        res.writeHead(404, { 'Content-Type': 'text/plain' });
        res.end('not found');
      }
    });
    other = await fileServer((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      res.end('from a host that is not allowed');
    });
    unreachable = CLOSED_PORT;
    service = await startService({
      MAX_INSTANCES: '1',
      FILES_ALLOWED_HOSTS: `127.0.0.1:${source.port}, 127.0.0.1:${unreachable}`,
      FILES_MAX_BYTES: String(MAX_BYTES),
      FILES_TIMEOUT_MS: String(TIMEOUT_MS),
    });
    // The rows were reset with the database: files of earlier runs are strays now.
    for (const name of readdirSync(service.config.files.cacheDir)) {
      if (/^[0-9a-f]{16}(-|$)/.test(name)) rmSync(join(service.config.files.cacheDir, name), { force: true });
    }
  });

  afterAll(async () => {
    for (const timer of timers) clearTimeout(timer);
    await service?.close();
    await stopServer(source);
    await stopServer(other);
  });

  let lab1: { url: string; filename: string };

  it('caches a URL posted as text/plain once, even when two requests race, and describes it', async () => {
    const url = source.url('/lab1.pkt');
    const answers = await Promise.all([
      request(service.url).post('/files').set('Content-Type', 'text/plain').send(url),
      request(service.url).post('/files').set('Content-Type', 'text/plain').send(url),
    ]);
    expect(answers.map((answer) => answer.status).sort()).toEqual([200, 201]);
    expect(source.gets.get('/lab1.pkt')).toBe(1);
    lab1 = answers[0].body;
    expect(lab1).toEqual({
      url,
      filename: expect.stringMatching(/^\/files\/[0-9a-f]{16}-lab1\.pkt$/),
      size: CONTENT['/lab1.pkt'].length,
      sha256: sha256(CONTENT['/lab1.pkt']),
      contentType: 'application/octet-stream',
      fetchedAt: expect.any(String),
    });
    expect(answers[1].body).toEqual(lab1);

    const onDisk = join(service.config.files.cacheDir, lab1.filename.slice('/files/'.length));
    expect(readFileSync(onDisk, 'utf8')).toBe(CONTENT['/lab1.pkt']);
    expect(statSync(onDisk).mode & 0o777).toBe(0o644);

    // Already cached: 200, JSON form too, no new download.
    const again = await request(service.url).post('/files').send({ url }).expect(200);
    expect(again.body).toEqual(lab1);
    expect(source.gets.get('/lab1.pkt')).toBe(1);

    expect((await request(service.url).get('/files').expect(200)).body).toEqual([lab1]);
    expect((await request(service.url).get(encoded(url)).expect(200)).body).toEqual(lab1);
    expect((await request(service.url).get('/files').query({ url }).expect(200)).body).toEqual(lab1);
    expect((await request(service.url).get(encoded(lab1.filename)).expect(200)).body).toEqual(lab1);
  });

  it('fetches once across processes sharing the state store (advisory lock on the URL)', async () => {
    const second = await startService({ ROLE: 'api', FILES_ALLOWED_HOSTS: `127.0.0.1:${source.port}` }, { reset: false });
    try {
      const url = source.url('/lab4.pkt');
      const answers = await Promise.all([
        request(service.url).post('/files').set('Content-Type', 'text/plain').send(url),
        request(second.url).post('/files').set('Content-Type', 'text/plain').send(url),
      ]);
      expect(answers.map((answer) => answer.status).sort()).toEqual([200, 201]);
      expect(answers[0].body).toEqual(answers[1].body);
      expect(source.gets.get('/lab4.pkt')).toBe(1);
      await request(service.url).delete(encoded(url)).expect(200);
    } finally {
      await second.close();
    }
  });

  it('follows allowed redirects and keys the file by the URL asked for', async () => {
    const url = source.url('/redirect-ok');
    const { body } = await request(service.url).post('/files').set('Content-Type', 'text/plain').send(url).expect(201);
    expect(body).toMatchObject({ url, filename: expect.stringMatching(/-redirect-ok$/), sha256: sha256(CONTENT['/lab3.pkt']) });
    await request(service.url).delete(encoded(url)).expect(200);
  });

  it('refuses what it must not or cannot fetch with a clear 400, leaving the cache unchanged', async () => {
    const before = await snapshot();
    const cases: [string, RegExp][] = [
      [`ftp://127.0.0.1:${source.port}/lab1.pkt`, /only http and https URLs can be fetched/],
      ['file:///etc/passwd', /only http and https URLs can be fetched/],
      [other.url('/x.pkt'), new RegExp(`host 127.0.0.1:${other.port} is not in FILES_ALLOWED_HOSTS`)],
      [`http://localhost:${source.port}/lab1.pkt`, /host localhost:\d+ is not in FILES_ALLOWED_HOSTS/],
      [source.url('/big-chunked'), /larger than the limit of 4096 bytes/],
      [source.url('/big-declared'), /\(4097 bytes\) is larger than the limit of 4096 bytes/],
      [`http://127.0.0.1:${unreachable}/lab.pkt`, /connection refused/],
      [source.url('/slow'), /no complete answer within 500 ms/],
      [source.url('/trickle'), /no complete answer within 500 ms/],
      [source.url('/partial'), /closed the connection before the end of the file/],
      [source.url('/hang-up'), /connection reset by the server|closed the connection without an answer/],
      [source.url('/redirect-away'), new RegExp(`redirect to .* host 127.0.0.1:${other.port} is not in FILES_ALLOWED_HOSTS`)],
      [source.url('/redirect-ftp'), /redirect to .*only http and https/],
      [source.url('/loop/0'), /more than 5 redirects/],
      [source.url('/missing.pkt'), /the server answered 404/],
    ];
    for (const [url, message] of cases) {
      const response = await request(service.url).post('/files').set('Content-Type', 'text/plain').send(url);
      expect({ url, status: response.status }).toEqual({ url, status: 400 });
      expect(response.body).toEqual({ status: 400, message: expect.stringMatching(message) });
    }
    expect(other.gets.size).toBe(0);
    expect(source.gets.get('/loop/5')).toBe(1);
    expect(source.gets.has('/loop/6')).toBe(false);
    expect(await snapshot()).toEqual(before);
  });

  it('refuses malformed bodies and lookups with a 400', async () => {
    const before = await snapshot();
    const post = () => request(service.url).post('/files');
    const answers = [
      [await post().set('Content-Type', 'text/plain').send(''), /the body must be a URL|must not be empty/],
      [await post(), /the body must be a URL/],
      [await post().send({}), /the body must be a URL/],
      [await post().send({ url: 5 }), /url must be a string/],
      [await post().send({ url: '  ' }), /url must not be empty/],
      [await post().send([source.url('/lab2.pkt')]), /the body must be a URL/],
      [await post().set('Content-Type', 'text/plain').send('lab2.pkt'), /is not an absolute URL/],
      [await post().set('Content-Type', 'application/json').send('{"url":'), /./],
    ] as const;
    for (const [response, message] of answers) {
      expect(response.status).toBe(400);
      expect(response.body).toEqual({ status: 400, message: expect.stringMatching(message) });
    }
    await request(service.url).get('/files?url=a&url=b').expect(400);
    const missing = await request(service.url).get(encoded(source.url('/never.pkt'))).expect(404);
    expect(missing.body).toEqual({ status: 404, message: expect.stringContaining('is not a cached file') });
    await request(service.url).get(encoded('/files/../../etc/passwd')).expect(404);
    expect(await snapshot()).toEqual(before);
  });

  it('loads an allocation file before answering; the next session on the instance gets the default file', async () => {
    const { body: instance } = await request(service.url).post('/instances?wait=true&timeout=60').expect(201);
    expect(instance.state).toBe('idle');

    // A URL not cached yet is fetched on demand, and the app has it loaded when the answer comes.
    const url = source.url('/lab2.pkt');
    const { body: first } = await request(service.url).post('/allocations').send({ file: url }).expect(201);
    const lab2 = (await request(service.url).get(encoded(url)).expect(200)).body;
    expect(first).toMatchObject({ status: 'active', instanceId: instance.id, file: lab2.filename, loadedFile: lab2.filename });
    expect(await appStatus(first.packetTracer)).toMatchObject({ loaded: lab2.filename, size: CONTENT['/lab2.pkt'].length });
    expect(source.gets.get('/lab2.pkt')).toBe(1);

    // The file posted earlier is visible inside the container at the path it was given.
    expect(await askApp(first.packetTracer, `LOAD ${lab1.filename}`)).toBe(`OK ${lab1.filename} ${CONTENT['/lab1.pkt'].length}`);
    expect((await appStatus(first.packetTracer)).loaded).toBe(lab1.filename);

    // Removing a file an active session uses is fine: the app already has it.
    await request(service.url).delete(encoded(url)).expect(200);
    expect((await request(service.url).get(`/allocations/${first.id}`).expect(200)).body.status).toBe('active');
    expect(await askApp(first.packetTracer, 'PING')).toBe('PONG');

    await request(service.url).delete(`/allocations/${first.id}`).expect(200);
    await idle(instance.id);
    const { body: next } = await request(service.url).post('/allocations').expect(201);
    expect(next.instanceId).toBe(instance.id);
    expect((await appStatus(next.packetTracer)).loaded).toBe('/files/default.pkt');
    await request(service.url).delete(`/allocations/${next.id}`).expect(200);

    // A cached file named by its container path or by its name in the cache, and a file an operator put in the cache directory.
    const operatorFile = 'operator-lab.pkt';
    writeFileSync(join(service.config.files.cacheDir, operatorFile), 'placed by hand\n', { mode: 0o644 });
    try {
      const cases = [
        [lab1.filename, lab1.filename],
        [lab1.filename.slice('/files/'.length), lab1.filename],
        [operatorFile, `/files/${operatorFile}`],
      ];
      for (const [file, loaded] of cases) {
        await idle(instance.id);
        const { body } = await request(service.url).post('/allocations').send({ file }).expect(201);
        expect(body).toMatchObject({ instanceId: instance.id, file: loaded, loadedFile: loaded });
        expect((await appStatus(body.packetTracer)).loaded).toBe(loaded);
        await request(service.url).delete(`/allocations/${body.id}`).expect(200);
      }
      await idle(instance.id);
    } finally {
      rmSync(join(service.config.files.cacheDir, operatorFile), { force: true });
    }
  });

  it('refuses allocations whose file cannot be had, creating no allocation', async () => {
    const before = (await request(service.url).get('/allocations?show=all').expect(200)).body.length;
    const cases: [string, RegExp][] = [
      [`ftp://127.0.0.1:${source.port}/lab1.pkt`, /only http and https URLs can be fetched/],
      [other.url('/x.pkt'), /is not in FILES_ALLOWED_HOSTS/],
      [source.url('/missing.pkt'), /cannot fetch .*answered 404/],
      ['/files/not-cached.pkt', /is not a cached file/],
      ['not-cached.pkt', /is not a cached file/],
    ];
    for (const [file, message] of cases) {
      const response = await request(service.url).post('/allocations').send({ file }).expect(400);
      expect(response.body).toEqual({ status: 400, message: expect.stringMatching(message) });
    }
    expect((await request(service.url).get('/allocations?show=all').expect(200)).body.length).toBe(before);
  });

  it('deletes one file (already gone from disk is fine) and clears the cache', async () => {
    const lab3 = (await request(service.url).post('/files').send({ url: source.url('/lab3.pkt') }).expect(201)).body;
    const lab2 = (await request(service.url).post('/files').send({ url: source.url('/lab2.pkt') }).expect(201)).body;
    const nameOf = (file: { filename: string }) => file.filename.slice('/files/'.length);

    rmSync(join(service.config.files.cacheDir, nameOf(lab3)));
    expect((await request(service.url).delete(encoded(lab3.url)).expect(200)).body).toEqual(lab3);
    await request(service.url).get(encoded(lab3.url)).expect(404);
    await request(service.url).delete(encoded(lab3.url)).expect(404);

    const removed = (await request(service.url).delete('/files').query({ url: lab2.url }).expect(200)).body;
    expect(removed).toEqual(lab2);
    expect(readdirSync(service.config.files.cacheDir)).not.toContain(nameOf(lab2));

    const cleared = (await request(service.url).delete('/files').expect(200)).body;
    expect(cleared).toEqual([lab1]);
    expect(await snapshot()).toEqual({ rows: [], entries: expect.not.arrayContaining([nameOf(lab1)]) });
    expect(readdirSync(service.config.files.cacheDir).filter((name) => /^[0-9a-f]{16}/.test(name) || name.startsWith('.'))).toEqual([]);
    expect(await violations(service.url)).toEqual([]);
  });
});
