import { createHash } from 'node:crypto';
import { InvalidRequestError } from '../common/errors';

/** Same bound as an allocation's `file`. */
export const MAX_URL_LENGTH = 2048;

const SCHEMES = new Set(['http:', 'https:']);
const DEFAULT_PORTS: Record<string, string> = { 'http:': '80', 'https:': '443' };
const MAX_BASENAME = 100;

/** A name the cache directory may hold (the schema checks the same pattern). */
export const LOCAL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

const withoutTrailingDot = (host: string) => host.replace(/\.$/, '');

/** The port a request to `url` goes to: explicit, or the scheme's default. */
export function effectivePort(url: URL): string {
  return url.port || DEFAULT_PORTS[url.protocol] || '';
}

/** An allow-list entry, its host normalised the way URLs are (lower case, punycode, IPv4 canonical form). */
/** One allow-list entry, host[:port], or null when it is not one. */
export function parseAllowedHost(entry: string): { host: string; port: string | undefined } | null {
  const match = /^(\[[^\]]+\]|[^:[\]/@?#]+)(?::(\d{1,5}))?$/.exec(entry.trim());
  if (!match) return null;
  try {
    return { host: withoutTrailingDot(new URL(`http://${match[1]}`).hostname), port: match[2] === undefined ? undefined : String(Number(match[2])) };
  } catch {
    return null;
  }
}

/**
 * Whether `url`'s host is on the allow-list. Entries are exact host names or addresses
 * ("files.example.org", "10.0.0.5", "[::1]"), optionally with a port ("files.example.org:8080");
 * an entry without a port allows every port. An empty list allows every host.
 */
export function hostAllowed(url: URL, allowedHosts: readonly string[]): boolean {
  if (allowedHosts.length === 0) return true;
  const host = withoutTrailingDot(url.hostname);
  const port = effectivePort(url);
  return allowedHosts.some((entry) => {
    const parsed = parseAllowedHost(entry);
    return parsed !== null && parsed.host === host && (parsed.port === undefined || parsed.port === port);
  });
}

/** host[:port] as named in the allow-list, for messages. */
export function hostLabel(url: URL): string {
  return url.port ? `${url.hostname}:${url.port}` : url.hostname;
}

/**
 * Parses and checks a URL the cache may fetch: absolute, http or https, no credentials, host on
 * the allow-list. Returns it normalised (no fragment), the form used as the cache key.
 */
export function checkFileUrl(text: string, allowedHosts: readonly string[], what = 'url'): URL {
  const shown = JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}...` : text);
  if (text.length > MAX_URL_LENGTH) throw new InvalidRequestError(`${what} must be at most ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new InvalidRequestError(`${what} ${shown} is not an absolute URL`);
  }
  if (!SCHEMES.has(url.protocol)) {
    throw new InvalidRequestError(`${what} ${shown} is not allowed: only http and https URLs can be fetched`);
  }
  if (url.username !== '' || url.password !== '') {
    throw new InvalidRequestError(`${what} ${shown} is not allowed: URLs with credentials are not accepted`);
  }
  if (!hostAllowed(url, allowedHosts)) {
    throw new InvalidRequestError(`${what} ${shown} is not allowed: host ${hostLabel(url)} is not in FILES_ALLOWED_HOSTS`);
  }
  url.hash = '';
  return url;
}

/** The last path segment, decoded, reduced to [A-Za-z0-9._-], without leading dots, at most 100 characters (extension kept). */
export function sanitizedBasename(pathname: string): string {
  const segment = pathname.split('/').filter(Boolean).pop() ?? '';
  let decoded: string;
  try {
    decoded = decodeURIComponent(segment);
  } catch {
    decoded = segment;
  }
  const clean = decoded
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^[._-]+/, '')
    .replace(/[._-]+$/, '');
  if (clean.length <= MAX_BASENAME) return clean;
  const extension = /\.[A-Za-z0-9]{1,16}$/.exec(clean)?.[0] ?? '';
  return clean.slice(0, MAX_BASENAME - extension.length) + extension;
}

/**
 * The cache's name for a URL: 16 hex digits of its SHA-256, then its sanitised last path segment
 * ("3f2a...-lab1.pkt"). Never a user path verbatim: no slashes, no leading dot, bounded length.
 */
export function localNameFor(url: string): string {
  const digest = createHash('sha256').update(url).digest('hex').slice(0, 16);
  let pathname = '';
  try {
    pathname = new URL(url).pathname;
  } catch {
    // not a URL: the digest alone names it
  }
  const basename = sanitizedBasename(pathname);
  return basename ? `${digest}-${basename}` : digest;
}
