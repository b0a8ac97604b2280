import { Request } from 'express';
import { baseUrl } from './request-url';

function fakeRequest(headers: Record<string, string>, trustProxy: boolean, protocol = 'http'): Request {
  return {
    headers,
    protocol,
    app: { get: (key: string) => (key === 'trust proxy' ? trustProxy : undefined) },
    get: (name: string) => headers[name.toLowerCase()],
  } as unknown as Request;
}

describe('baseUrl', () => {
  it('uses the Host header without a proxy', () => {
    expect(baseUrl(fakeRequest({ host: '127.0.0.1:8080' }, false))).toBe('http://127.0.0.1:8080');
  });

  it('honours X-Forwarded-Host and X-Forwarded-Prefix behind a trusted proxy (first value of a list)', () => {
    const request = fakeRequest({ host: 'api:8080', 'x-forwarded-host': 'labs.example.org, inner', 'x-forwarded-prefix': '/internal/' }, true, 'https');
    expect(baseUrl(request)).toBe('https://labs.example.org/internal');
  });

  it('ignores forwarded headers when the proxy is not trusted', () => {
    expect(baseUrl(fakeRequest({ host: 'api:8080', 'x-forwarded-host': 'evil.example' }, false))).toBe('http://api:8080');
  });
});
