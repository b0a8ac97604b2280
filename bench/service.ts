import { ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';

/** A parsed JSON answer; each call site checks the fields it reads. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Json = any;

export interface Reply<T = Json> {
  status: number;
  body: T;
  headers: Record<string, string | string[] | undefined>;
  ms: number;
}

/** A keep-alive HTTP client, the way a web app in front of the service would call it. */
export class Client {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 64 });

  constructor(readonly base: string) {}

  call<T = Json>(method: string, path: string, body?: unknown, timeoutMs = 120000): Promise<Reply<T>> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const url = new URL(path, this.base);
    return new Promise((resolve, reject) => {
      const started = performance.now();
      const req = request(
        {
          agent: this.agent,
          method,
          host: url.hostname,
          port: url.port,
          path: url.pathname + url.search,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const ms = performance.now() - started;
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              // not JSON: kept as text
            }
            resolve({ status: res.statusCode ?? 0, body: parsed as T, headers: res.headers, ms });
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resident set size of a process in MB, from /proc. */
export function rssMb(pid: number): number {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** The service as users run it: the built app (`node dist/src/main.js`) in its own process. */
export class ServiceProcess {
  private exited = false;

  private constructor(
    private readonly child: ChildProcess,
    readonly client: Client,
  ) {
    child.once('exit', () => (this.exited = true));
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  static async start(root: string, env: Record<string, string>, logFile: string): Promise<ServiceProcess> {
    const main = join(root, 'dist', 'src', 'main.js');
    if (!existsSync(main)) throw new Error(`${main} is missing: build first (npx tsc -p tsconfig.build.json)`);
    const port = await freePort();
    const log = createWriteStream(logFile, { flags: 'a' });
    // BENCH_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", profiles the service under the load.
    const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
    const child = spawn(process.execPath, [...nodeArgs, main], {
      cwd: root,
      env: { PATH: process.env.PATH ?? '', ...env, HTTP_HOST: '127.0.0.1', HTTP_PORT: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    const service = new ServiceProcess(child, new Client(`http://127.0.0.1:${port}`));
    const deadline = Date.now() + 60000;
    for (;;) {
      if (service.exited) throw new Error(`the service exited at start-up; see ${logFile}`);
      try {
        const ready = await service.client.call('GET', '/health/ready', undefined, 2000);
        if (ready.status === 200) return service;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await service.stop();
        throw new Error(`the service was not ready within 60 s; see ${logFile}`);
      }
      await sleep(100);
    }
  }

  rssMb(): number {
    return rssMb(this.pid);
  }

  async stop(): Promise<void> {
    this.client.close();
    if (this.exited) return;
    const gone = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15000);
    await gone;
    clearTimeout(timer);
  }
}
