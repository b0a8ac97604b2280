import { Injectable, Logger } from '@nestjs/common';
import { randomBytes } from 'node:crypto';
import { FileHandle, mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { AppConfig } from '../config/app-config';
import { LOCAL_NAME } from './file-policy';

/** Downloads in progress; the leading dot keeps them apart from cached names (which start with a letter or digit). */
const TEMP_PREFIX = '.download-';
/** A temporary file this old was left by a crashed process. */
const STALE_TEMP_MS = 3600_000;

export interface TempFile {
  path: string;
  handle: FileHandle;
}

/**
 * The cache directory on this machine, bind-mounted read-only into every instance. A file appears
 * in it whole or not at all: it is written under a temporary name, flushed, then renamed.
 */
@Injectable()
export class CacheDirectory {
  private readonly logger = new Logger(CacheDirectory.name);
  readonly root: string;

  constructor(config: AppConfig) {
    this.root = config.files.cacheDir;
  }

  /** Creates the directory if needed and removes temporary files left by crashed processes. */
  async prepare(): Promise<void> {
    await mkdir(this.root, { recursive: true });
    const now = Date.now();
    for (const name of await readdir(this.root)) {
      if (!name.startsWith(TEMP_PREFIX)) continue;
      const path = join(this.root, name);
      const info = await stat(path).catch(() => null);
      if (info && now - info.mtimeMs > STALE_TEMP_MS) {
        await unlink(path).catch(() => undefined);
        this.logger.log(`removed stale download ${name}`);
      }
    }
  }

  /** A new, empty, world-readable file (the app in the container may run as another user). */
  async createTemp(): Promise<TempFile> {
    await mkdir(this.root, { recursive: true });
    const path = join(this.root, `${TEMP_PREFIX}${process.pid}-${randomBytes(8).toString('hex')}`);
    const handle = await open(path, 'wx', 0o644);
    await handle.chmod(0o644);
    return { path, handle };
  }

  /** Flushes the temporary file and renames it to `localName` atomically (replacing a stale file of that name). */
  async commit(temp: TempFile, localName: string): Promise<void> {
    await temp.handle.sync();
    await temp.handle.close();
    await rename(temp.path, this.pathOf(localName));
    await this.syncDirectory();
  }

  /** Removes an unfinished download; never fails. */
  async discard(temp: TempFile): Promise<void> {
    await temp.handle.close().catch(() => undefined);
    await unlink(temp.path).catch(() => undefined);
  }

  /** Whether a regular file of that name is in the cache. */
  async has(localName: string): Promise<boolean> {
    if (!LOCAL_NAME.test(localName)) return false;
    const info = await stat(this.pathOf(localName)).catch(() => null);
    return info?.isFile() ?? false;
  }

  /** Removes a cached file; false when it was already gone. */
  async remove(localName: string): Promise<boolean> {
    try {
      await unlink(this.pathOf(localName));
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw error;
    }
  }

  private pathOf(localName: string): string {
    if (!LOCAL_NAME.test(localName)) throw new Error(`not a cache file name: ${JSON.stringify(localName)}`);
    return join(this.root, localName);
  }

  /** Makes the rename durable. */
  private async syncDirectory(): Promise<void> {
    const directory = await open(this.root, 'r');
    try {
      await directory.sync();
    } finally {
      await directory.close();
    }
  }
}
