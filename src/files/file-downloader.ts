import { Injectable, Logger } from '@nestjs/common';
import { createHash } from 'node:crypto';
import { FileHandle } from 'node:fs/promises';
import { ClientRequest, IncomingMessage, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { AppConfig } from '../config/app-config';
import { InvalidRequestError } from '../common/errors';
import { checkFileUrl } from './file-policy';

export const MAX_REDIRECTS = 5;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const TRUNCATED = 'the server closed the connection before the end of the file';

export interface Download {
  size: number;
  sha256: string;
  contentType: string | null;
  /** The URL the content came from, after redirects. */
  finalUrl: string;
}

/** Why a fetch failed, in words a client can act on. */
class FetchFailure extends Error {}

/** The cache could not be written: our problem, not the client's (a 500, not a 400). */
class WriteFailure extends Error {
  constructor(readonly reason: unknown) {
    super('write failed');
  }
}

async function writeAll(target: FileHandle, chunk: Buffer): Promise<void> {
  try {
    for (let offset = 0; offset < chunk.length; ) {
      const { bytesWritten } = await target.write(chunk, offset, chunk.length - offset);
      offset += bytesWritten;
    }
  } catch (error) {
    throw new WriteFailure(error);
  }
}

const NETWORK_ERRORS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset by the server',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
};

function describe(error: unknown): string {
  if (error instanceof FetchFailure) return error.message;
  if (error instanceof Error && /socket hang up/i.test(error.message)) return 'the server closed the connection without an answer';
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== undefined && code in NETWORK_ERRORS) return `${NETWORK_ERRORS[code]} (${code})`;
  return error instanceof Error ? error.message : String(error);
}

/**
 * Fetches a URL into an open file with Node's http/https: only http(s), the allow-list re-checked
 * on every redirect (at most 5, followed by hand), a size limit enforced while streaming and one
 * deadline for the whole transfer. Computes the SHA-256 on the way.
 */
@Injectable()
export class FileDownloader {
  private readonly logger = new Logger(FileDownloader.name);

  constructor(private readonly config: AppConfig) {}

  /** Throws InvalidRequestError naming the URL and the reason when the content cannot be had. */
  async download(url: URL, target: FileHandle): Promise<Download> {
    const { maxBytes, timeoutMs } = this.config.files;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), timeoutMs);
    let current = url;
    try {
      for (let hop = 0; ; hop += 1) {
        const response = await this.get(current, controller.signal);
        const status = response.statusCode ?? 0;
        if (REDIRECTS.has(status)) {
          response.resume();
          const location = response.headers.location;
          if (location === undefined) throw new FetchFailure(`the server answered ${status} without a Location`);
          if (hop >= MAX_REDIRECTS) throw new FetchFailure(`more than ${MAX_REDIRECTS} redirects`);
          let next: URL;
          try {
            next = new URL(location, current);
          } catch {
            throw new FetchFailure(`the server redirected to an invalid URL`);
          }
          // The same rules as for the requested URL, on every hop.
          current = checkFileUrl(next.href, this.config.files.allowedHosts, 'redirect to');
          continue;
        }
        if (status < 200 || status > 299) {
          response.resume();
          throw new FetchFailure(`the server answered ${status}${response.statusMessage ? ` ${response.statusMessage}` : ''}`);
        }
        const declared = Number(response.headers['content-length']);
        if (Number.isFinite(declared) && declared > maxBytes) {
          response.destroy();
          throw new FetchFailure(`the file (${declared} bytes) is larger than the limit of ${maxBytes} bytes`);
        }
        const hash = createHash('sha256');
        let size = 0;
        try {
          for await (const chunk of response as AsyncIterable<Buffer>) {
            size += chunk.length;
            if (size > maxBytes) {
              response.destroy();
              throw new FetchFailure(`the file is larger than the limit of ${maxBytes} bytes`);
            }
            hash.update(chunk);
            await writeAll(target, chunk);
          }
        } catch (error) {
          // A network error once the answer has started means a cut transfer.
          if (error instanceof WriteFailure) throw error;
          const network = (error as NodeJS.ErrnoException).code === 'ECONNRESET' || /aborted/i.test(String(error));
          throw network && !controller.signal.aborted ? new FetchFailure(TRUNCATED) : error;
        }
        if (!response.complete) throw new FetchFailure(TRUNCATED);
        const contentType = response.headers['content-type']?.slice(0, 255) ?? null;
        return { size, sha256: hash.digest('hex'), contentType, finalUrl: current.href };
      }
    } catch (error) {
      if (error instanceof WriteFailure) throw error.reason;
      if (error instanceof InvalidRequestError) throw new InvalidRequestError(`cannot fetch ${url.href}: ${error.message}`);
      const reason = controller.signal.aborted ? `no complete answer within ${timeoutMs} ms` : describe(error);
      this.logger.warn(`fetch of ${url.href} failed: ${reason}`);
      throw new InvalidRequestError(`cannot fetch ${url.href}: ${reason}`);
    } finally {
      clearTimeout(timer);
    }
  }

  private get(url: URL, signal: AbortSignal): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
      let req: ClientRequest;
      try {
        req = send(url, {
          method: 'GET',
          signal,
          agent: false,
          headers: { 'User-Agent': 'pt-instance-manager', Accept: '*/*', 'Accept-Encoding': 'identity' },
        });
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)));
        return;
      }
      req.once('response', resolve);
      req.on('error', reject);
      req.end();
    });
  }
}
