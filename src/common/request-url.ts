import { Request } from 'express';

/**
 * The absolute base URL the client used, right behind a reverse proxy: X-Forwarded-Proto and
 * X-Forwarded-Host (honoured through Express's trust proxy setting) and X-Forwarded-Prefix.
 */
export function baseUrl(request: Request): string {
  const trusted = Boolean(request.app?.get('trust proxy'));
  const first = (value: string | string[] | undefined): string | undefined =>
    (Array.isArray(value) ? value[0] : value)?.split(',')[0]?.trim() || undefined;
  const host = (trusted ? first(request.headers['x-forwarded-host']) : undefined) ?? request.get('host') ?? 'localhost';
  const prefix = trusted ? (first(request.headers['x-forwarded-prefix']) ?? '') : '';
  return `${request.protocol}://${host}${prefix.replace(/\/+$/, '')}`;
}
