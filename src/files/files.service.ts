import { Injectable, Logger, OnModuleInit } from '@nestjs/common';
import { AppConfig } from '../config/app-config';
import { InvalidRequestError, NotFoundError } from '../common/errors';
import { CacheDirectory } from './cache-directory';
import { CachedFile } from './cached-file.entity';
import { CachedFileStore } from './cached-file.store';
import { Download, FileDownloader } from './file-downloader';
import { checkFileUrl, LOCAL_NAME, localNameFor } from './file-policy';

export interface AddedFile {
  file: CachedFile;
  /** true when this request fetched it; false when it was cached already (or fetched by a request it waited on). */
  created: boolean;
}

const BODY_EXPECTED = 'the body must be a URL as text/plain or JSON {"url": "http://..."}';
/** "http:", "ftp:", "file:" ...; a cached name or a container path never has a colon. */
const HAS_SCHEME = /^[a-z][a-z0-9+.-]*:/i;
/** Waiting for another process's download of the same URL: its whole time limit, and some slack. */
const LOCK_SLACK_MS = 5000;

/**
 * Cache of initial files fetched from URLs and mounted read-only into every instance at the mount
 * path. A URL is fetched once: concurrent requests in this process share one download, and other
 * processes wait on a Postgres advisory lock keyed on the URL (the unique URL is the last guard).
 */
@Injectable()
export class FilesService implements OnModuleInit {
  private readonly logger = new Logger(FilesService.name);
  private readonly inFlight = new Map<string, Promise<AddedFile>>();

  constructor(
    private readonly config: AppConfig,
    private readonly store: CachedFileStore,
    private readonly directory: CacheDirectory,
    private readonly downloader: FileDownloader,
  ) {}

  async onModuleInit(): Promise<void> {
    try {
      await this.directory.prepare();
    } catch (error) {
      // Not fatal here: every fetch reports the problem to its client.
      this.logger.warn(`cache directory ${this.directory.root} is not usable: ${error instanceof Error ? error.message : String(error)}`);
    }
  }

  /** POST /files: the body is the URL as text, or {"url": ...}. */
  add(body: unknown): Promise<AddedFile> {
    return this.ensureCached(this.urlOfBody(body));
  }

  list(): Promise<CachedFile[]> {
    return this.store.list();
  }

  /** `key` is the file's URL, its path inside the containers or its name in the cache. */
  async get(key: string): Promise<CachedFile> {
    const file = await this.find(key);
    if (!file) throw new NotFoundError(`${JSON.stringify(key)} is not a cached file`);
    return file;
  }

  /** Removes the row, then the file (already gone is fine). Instances that loaded it keep their copy in the app. */
  async remove(key: string): Promise<CachedFile> {
    const file = await this.get(key);
    const removed = await this.removeUrl(file.url);
    if (!removed) throw new NotFoundError(`${JSON.stringify(key)} is not a cached file`);
    return removed;
  }

  /** Removes every cached file; files in the directory that the cache did not fetch (e.g. a default file) stay. */
  async clear(): Promise<CachedFile[]> {
    const removed: CachedFile[] = [];
    for (const file of await this.store.list()) {
      const gone = await this.removeUrl(file.url);
      if (gone) removed.push(gone);
    }
    return removed;
  }

  /**
   * The path inside the containers of the initial file an allocation asks for: a URL (cached on
   * demand) or the container path or name of a file in the cache. Throws InvalidRequestError (400) otherwise.
   */
  async resolveForAllocation(file: string): Promise<string> {
    const text = file.trim();
    if (HAS_SCHEME.test(text)) {
      const { file: cached } = await this.ensureCached(checkFileUrl(text, this.config.files.allowedHosts, 'file'));
      return cached.filename;
    }
    const name = this.localNameOf(text);
    if (name !== null) {
      const row = await this.store.findByLocalName(name);
      // A row whose file went missing is fetched again from its URL.
      if (row) return (await this.ensureCached(new URL(row.url))).file.filename;
      // A file an operator put in the cache directory (such as the profile's default file).
      if (await this.directory.has(name)) return this.containerPath(name);
    }
    throw new InvalidRequestError(`file ${JSON.stringify(text.slice(0, 200))} is not a cached file: give an http(s) URL or the filename of a cached file`);
  }

  private urlOfBody(body: unknown): URL {
    let text: unknown = body;
    if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
      text = (body as { url?: unknown }).url;
      if (text === undefined) throw new InvalidRequestError(BODY_EXPECTED);
      if (typeof text !== 'string') throw new InvalidRequestError('url must be a string');
    } else if (typeof text !== 'string') {
      throw new InvalidRequestError(BODY_EXPECTED);
    }
    const url = text.trim();
    if (url === '') throw new InvalidRequestError(`url must not be empty: ${BODY_EXPECTED}`);
    return checkFileUrl(url, this.config.files.allowedHosts);
  }

  /** Cached already, or fetched once for all concurrent callers. */
  private async ensureCached(url: URL): Promise<AddedFile> {
    const key = url.href;
    const existing = await this.store.findByUrl(key);
    if (existing && (await this.directory.has(existing.localName))) return { file: existing, created: false };
    const running = this.inFlight.get(key);
    if (running) return { file: (await running).file, created: false };
    const fetching = this.fetchExclusively(url).finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, fetching);
    return fetching;
  }

  private fetchExclusively(url: URL): Promise<AddedFile> {
    const key = url.href;
    return this.store.withUrlLock(key, this.config.files.timeoutMs + LOCK_SLACK_MS, async (manager) => {
      const existing = await this.store.findByUrl(key, manager);
      if (existing) {
        if (await this.directory.has(existing.localName)) return { file: existing, created: false };
        this.logger.warn(`file ${key}: ${existing.localName} is missing from the cache directory, fetching it again`);
        await this.store.remove(existing.id, manager);
      }
      const localName = localNameFor(key);
      const temp = await this.directory.createTemp();
      let download: Download;
      try {
        download = await this.downloader.download(url, temp.handle);
        await this.directory.commit(temp, localName);
      } catch (error) {
        // Nothing of a failed download stays: no temporary file, no half-renamed file, no row.
        await this.directory.discard(temp);
        await this.directory.remove(localName).catch(() => false);
        throw error;
      }
      try {
        const file = await this.store.insert(
          {
            url: key,
            localName,
            filename: this.containerPath(localName),
            size: download.size,
            sha256: download.sha256,
            contentType: download.contentType,
            fetchedAt: new Date(),
          },
          manager,
        );
        const via = download.finalUrl === key ? '' : ` via ${download.finalUrl}`;
        this.logger.log(`file ${key}: cached as ${localName} (${download.size} bytes${via})`);
        return { file, created: true };
      } catch (error) {
        // Another writer got the URL in first (it names the same file): theirs stands.
        const winner = await this.store.findByUrl(key, manager).catch(() => null);
        if (winner) return { file: winner, created: false };
        await this.directory.remove(localName).catch(() => false);
        throw error;
      }
    });
  }

  private removeUrl(url: string): Promise<CachedFile | null> {
    return this.store.withUrlLock(url, this.config.files.timeoutMs + LOCK_SLACK_MS, async (manager) => {
      const file = await this.store.findByUrl(url, manager);
      if (!file || !(await this.store.remove(file.id, manager))) return null;
      const hadFile = await this.directory.remove(file.localName).catch((error: unknown) => {
        this.logger.warn(`file ${url}: row removed but ${file.localName} could not be: ${error instanceof Error ? error.message : String(error)}`);
        return false;
      });
      this.logger.log(`file ${url}: removed from the cache${hadFile ? '' : ' (the file was already gone)'}`);
      return file;
    });
  }

  private async find(key: string): Promise<CachedFile | null> {
    const text = key.trim();
    if (HAS_SCHEME.test(text)) {
      let url: URL;
      try {
        url = new URL(text);
      } catch {
        throw new InvalidRequestError(`${JSON.stringify(text.slice(0, 200))} is not an absolute URL`);
      }
      url.hash = '';
      return this.store.findByUrl(url.href);
    }
    const name = this.localNameOf(text);
    return name === null ? null : this.store.findByLocalName(name);
  }

  /** "/files/abc-lab.pkt" or "abc-lab.pkt" -> "abc-lab.pkt"; null for anything that cannot name a file in the cache. */
  private localNameOf(text: string): string | null {
    const prefix = `${this.mountPath()}/`;
    const name = text.startsWith(prefix) ? text.slice(prefix.length) : text;
    return LOCAL_NAME.test(name) ? name : null;
  }

  private containerPath(localName: string): string {
    return `${this.mountPath()}/${localName}`;
  }

  private mountPath(): string {
    return this.config.files.mountPath.replace(/\/+$/, '');
  }
}
