import { InvalidRequestError } from '../common/errors';
import { checkFileUrl, hostAllowed, LOCAL_NAME, localNameFor, sanitizedBasename } from './file-policy';

const allowed = (url: string, hosts: string[]) => hostAllowed(new URL(url), hosts);

describe('hostAllowed', () => {
  it('allows every host when the list is empty', () => {
    expect(allowed('http://anything.example.org/x', [])).toBe(true);
    expect(allowed('https://10.1.2.3:8443/x', [])).toBe(true);
  });

  it('matches exact host names, case-insensitively, on any port when the entry has none', () => {
    const hosts = ['Files.Example.org'];
    expect(allowed('http://files.example.org/a.pkt', hosts)).toBe(true);
    expect(allowed('https://FILES.example.org:8443/a.pkt', hosts)).toBe(true);
    expect(allowed('http://files.example.org./a.pkt', hosts)).toBe(true);
    expect(allowed('http://evil-files.example.org/a.pkt', hosts)).toBe(false);
    expect(allowed('http://files.example.org.evil.com/a.pkt', hosts)).toBe(false);
    expect(allowed('http://example.org/a.pkt', hosts)).toBe(false);
  });

  it('matches host:port entries on that port only, the scheme default port counting as given', () => {
    const hosts = ['127.0.0.1:8080', 'labs.example.org:443'];
    expect(allowed('http://127.0.0.1:8080/a', hosts)).toBe(true);
    expect(allowed('http://127.0.0.1:8081/a', hosts)).toBe(false);
    expect(allowed('http://127.0.0.1/a', hosts)).toBe(false);
    expect(allowed('https://labs.example.org/a', hosts)).toBe(true);
    expect(allowed('http://labs.example.org/a', hosts)).toBe(false);
  });

  it('compares addresses in their canonical form and accepts bracketed IPv6 entries', () => {
    expect(allowed('http://127.1:9000/a', ['127.0.0.1:9000'])).toBe(true);
    expect(allowed('http://[::1]:9000/a', ['[::1]'])).toBe(true);
    expect(allowed('http://[::1]:9000/a', ['[0:0::1]:9000'])).toBe(true);
    expect(allowed('http://[::1]:9001/a', ['[::1]:9000'])).toBe(false);
  });

  it('never matches malformed entries', () => {
    for (const entry of ['', 'http://files.example.org', 'files.example.org/path', 'user@files.example.org', 'files.example.org:port', '*']) {
      expect(allowed('http://files.example.org/a', [entry])).toBe(false);
    }
  });
});

describe('checkFileUrl', () => {
  const reject = (text: string, hosts: string[], message: RegExp) => {
    expect(() => checkFileUrl(text, hosts)).toThrow(InvalidRequestError);
    expect(() => checkFileUrl(text, hosts)).toThrow(message);
  };

  it('accepts http and https URLs and drops the fragment', () => {
    expect(checkFileUrl('http://files.example.org/labs/a.pkt#top', []).href).toBe('http://files.example.org/labs/a.pkt');
    expect(checkFileUrl('HTTPS://Files.Example.org/a.pkt', ['files.example.org']).href).toBe('https://files.example.org/a.pkt');
  });

  it('refuses other schemes, relative or malformed URLs, credentials, long URLs and hosts off the list', () => {
    reject('ftp://files.example.org/a.pkt', [], /only http and https/);
    reject('file:///etc/passwd', [], /only http and https/);
    reject('javascript:alert(1)', [], /only http and https/);
    reject('/labs/a.pkt', [], /not an absolute URL/);
    reject('http://', [], /not an absolute URL/);
    reject('http://user:secret@files.example.org/a.pkt', [], /credentials/);
    reject(`http://files.example.org/${'a'.repeat(2100)}`, [], /at most 2048 characters/);
    reject('http://other.example.org/a.pkt', ['files.example.org'], /host other.example.org is not in FILES_ALLOWED_HOSTS/);
    reject('http://127.0.0.1:9001/a.pkt', ['127.0.0.1:9000'], /host 127.0.0.1:9001 is not in FILES_ALLOWED_HOSTS/);
  });
});

describe('localNameFor', () => {
  it('is 16 hex digits of the URL hash, a dash and the last path segment', () => {
    const name = localNameFor('http://files.example.org/labs/lab1.pkt');
    expect(name).toMatch(/^[0-9a-f]{16}-lab1\.pkt$/);
    expect(localNameFor('http://files.example.org/labs/lab1.pkt')).toBe(name);
  });

  it('differs for different URLs with the same file name', () => {
    expect(localNameFor('http://a.example.org/lab1.pkt')).not.toBe(localNameFor('http://b.example.org/lab1.pkt'));
    expect(localNameFor('http://a.example.org/lab1.pkt')).not.toBe(localNameFor('http://a.example.org/lab1.pkt?v=2'));
  });

  it('never carries path tricks or unsafe characters, and always passes the schema check', () => {
    const urls = [
      'http://h/',
      'http://h',
      'http://h/..',
      'http://h/%2e%2e%2f%2e%2e%2fetc%2fpasswd',
      'http://h/a/..%2F..%2Fsecret',
      'http://h/.hidden',
      'http://h/dir/',
      'http://h/lab%20one%20(final).pkt',
      'http://h/%ff%fe.pkt',
      'http://h/%E2%9C%93-r%C3%A9seau.pkt',
      'http://h/a;b?c=d',
      `http://h/${'x'.repeat(500)}.pkt`,
      'not a url',
    ];
    for (const url of urls) {
      const name = localNameFor(url);
      expect(name).toMatch(LOCAL_NAME);
      expect(name).not.toContain('/');
      expect(name).not.toContain('..');
      expect(name.length).toBeLessThanOrEqual(16 + 1 + 100);
    }
    expect(localNameFor('http://h/')).toMatch(/^[0-9a-f]{16}$/);
    expect(localNameFor('http://h/%2e%2e%2f%2e%2e%2fetc%2fpasswd')).toMatch(/^[0-9a-f]{16}-etc_passwd$/);
  });
});

describe('sanitizedBasename', () => {
  it('keeps safe names, replaces runs of other characters and trims leading dots', () => {
    expect(sanitizedBasename('/labs/lab1.pkt')).toBe('lab1.pkt');
    expect(sanitizedBasename('/labs/lab%20one%20(final).pkt')).toBe('lab_one_final_.pkt');
    expect(sanitizedBasename('/labs/...hidden.pkt')).toBe('hidden.pkt');
    expect(sanitizedBasename('/labs/')).toBe('labs');
    expect(sanitizedBasename('/')).toBe('');
  });

  it('keeps the extension when it shortens a long name', () => {
    const name = sanitizedBasename(`/${'n'.repeat(300)}.pkt`);
    expect(name).toHaveLength(100);
    expect(name.endsWith('.pkt')).toBe(true);
  });
});
