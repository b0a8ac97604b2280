/**
 * Reads typed values out of an environment map. Every failure throws a
 * ConfigError whose message names the variable and what it expects, so a bad
 * setting stops start-up with one readable line.
 */
export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    expected: string,
    got: string | undefined,
  ) {
    super(
      got === undefined
        ? `${variable} is required: ${expected}`
        : `${variable} must be ${expected} (got ${JSON.stringify(got)})`,
    );
    this.name = 'ConfigError';
  }
}

export type Env = Record<string, string | undefined>;

export class EnvReader {
  constructor(private readonly env: Env) {}

  private raw(name: string): string | undefined {
    const value = this.env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  }

  string(name: string, fallback?: string): string {
    const value = this.raw(name) ?? fallback;
    if (value === undefined) throw new ConfigError(name, 'a non-empty string', undefined);
    return value;
  }

  optionalString(name: string): string | undefined {
    return this.raw(name);
  }

  int(name: string, fallback: number, min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const expected = `an integer between ${min} and ${max}`;
    if (!/^-?\d+$/.test(value)) throw new ConfigError(name, expected, value);
    const parsed = Number(value);
    if (parsed < min || parsed > max) throw new ConfigError(name, expected, value);
    return parsed;
  }

  number(name: string, fallback: number, min: number, max: number): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const parsed = Number(value);
    if (!Number.isFinite(parsed) || parsed < min || parsed > max) {
      throw new ConfigError(name, `a number between ${min} and ${max}`, value);
    }
    return parsed;
  }

  bool(name: string, fallback: boolean): boolean {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (/^(1|true|yes|on)$/i.test(value)) return true;
    if (/^(0|false|no|off)$/i.test(value)) return false;
    throw new ConfigError(name, 'true or false', value);
  }

  oneOf<T extends string>(name: string, choices: readonly T[], fallback: T): T {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (!(choices as readonly string[]).includes(value)) {
      throw new ConfigError(name, `one of ${choices.join(', ')}`, value);
    }
    return value as T;
  }

  url(name: string, protocols: readonly string[], fallback?: string): string {
    const value = this.raw(name) ?? fallback;
    const expected = `a URL with scheme ${protocols.join(' or ')}`;
    if (value === undefined) throw new ConfigError(name, expected, undefined);
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      throw new ConfigError(name, expected, value);
    }
    if (!protocols.includes(parsed.protocol.replace(/:$/, ''))) throw new ConfigError(name, expected, value);
    return value;
  }

  /** "40000-40999" -> [40000, 40999] */
  range(name: string, fallback: string, min: number, max: number): [number, number] {
    const value = this.raw(name) ?? fallback;
    const expected = `a range FROM-TO with ${min} <= FROM <= TO <= ${max}`;
    const match = /^(\d+)\s*-\s*(\d+)$/.exec(value);
    if (!match) throw new ConfigError(name, expected, value);
    const from = Number(match[1]);
    const to = Number(match[2]);
    if (from < min || to > max || from > to) throw new ConfigError(name, expected, value);
    return [from, to];
  }

  list(name: string, fallback: string[]): string[] {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    return value
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item.length > 0);
  }

  /** "ipc=39000,vnc=5900" -> { ipc: 39000, vnc: 5900 } */
  portMap(name: string, fallback: string): Record<string, number> {
    const value = this.raw(name) ?? fallback;
    const expected = 'a list like ipc=39000,vnc=5900 (names of letters, ports 1-65535)';
    const result: Record<string, number> = {};
    for (const item of value.split(',').map((part) => part.trim()).filter(Boolean)) {
      const match = /^([a-z][a-z0-9_-]*)=(\d+)$/i.exec(item);
      const port = match ? Number(match[2]) : NaN;
      if (!match || port < 1 || port > 65535 || match[1] in result) throw new ConfigError(name, expected, value);
      result[match[1]] = port;
    }
    if (Object.keys(result).length === 0) throw new ConfigError(name, expected, value);
    return result;
  }
}
