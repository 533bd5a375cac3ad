import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { IMAGE_NAME_RE } from '../common/manifest.js';
import { describeZodError } from '../common/zod-error.js';
import { normalizeSshKey } from './machines/ssh-key.js';
import { SETTINGS, type ServeFlags, type Setting } from './settings.js';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export interface ListenAddress {
  host: string;
  port: number;
}

/** "ADDR:PORT", "[v6]:PORT" or ":PORT" (all addresses). */
export function parseListen(value: string, what: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(`${what}: "${value}" is not ADDR:PORT (e.g. 0.0.0.0:8080, [::]:8080, :8080)`);
  const host = m[1] ?? (m[2] || '0.0.0.0');
  return { host, port };
}

const listen = (what: string) =>
  z.union([z.string(), z.object({ host: z.string(), port: z.number().int().min(0).max(65535) })]).transform((v, ctx) => {
    if (typeof v !== 'string') return v;
    try {
      return parseListen(v, what);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });

export const configSchema = z.strictObject({
  dataDir: z.string().min(1).default('./var'),
  httpListen: listen('httpListen').default({ host: '0.0.0.0', port: 8080 }),
  /** What goes into scripts and kernel command lines; derived from httpListen when absent. */
  publicUrl: z
    .url({ protocol: /^https?$/, error: 'publicUrl must be an http:// or https:// URL' })
    .transform((u) => u.replace(/\/+$/, ''))
    .optional(),
  apiTokenFile: z.string().min(1).optional(),
  tftp: z
    .strictObject({
      enabled: z.boolean().optional(),
      listen: listen('tftp.listen').optional(),
      ipxeDir: z.string().min(1).default('/usr/lib/ipxe'),
    })
    .default({ ipxeDir: '/usr/lib/ipxe' }),
  /** Limits on receiving requests (not on streaming responses): slow or many clients cannot hold the server. */
  http: z
    .strictObject({
      maxConnections: z.number().int().min(16).max(1_000_000).default(4096),
      headersTimeoutMs: z.number().int().min(1000).max(600_000).default(30_000),
      requestTimeoutMs: z.number().int().refine((v) => v === 0 || (v >= 1000 && v <= 86_400_000), 'http.requestTimeoutMs: 0 (no limit) or 1000-86400000').default(0),
    })
    .default({ maxConnections: 4096, headersTimeoutMs: 30_000, requestTimeoutMs: 0 }),
  /** ramboot's proxyDHCP (server/dhcp/): boot information for netboot clients, no addresses. */
  proxyDhcp: z
    .strictObject({
      enabled: z.boolean().default(false),
      interface: z.string().regex(/^[A-Za-z0-9_.:@-]{1,15}$/, 'proxyDhcp.interface: an interface name like eth0').optional(),
      /** The boot server address put in replies (option 54, siaddr); default: the interface's, else --public-url's host. */
      serverIp: z.ipv4().optional(),
      bootFiles: z
        .strictObject({
          bios: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/).default('undionly.kpxe'),
          efi: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/).default('snponly.efi'),
        })
        .default({ bios: 'undionly.kpxe', efi: 'snponly.efi' }),
      /** Answer UEFI HTTP boot clients with <public-url>/ipxe/ipxe.efi. */
      httpBoot: z.boolean().default(true),
    })
    .default({ enabled: false, bootFiles: { bios: 'undionly.kpxe', efi: 'snponly.efi' }, httpBoot: true }),
  /** Lifetime of a boot session token (seconds). */
  sessionTtlSeconds: z.number().int().min(60).max(7 * 24 * 3600).default(3600),
  unknownMachines: z
    .strictObject({
      boot: z.enum(['local', 'ramboot']).default('local'),
      image: z.string().regex(IMAGE_NAME_RE).default('default'),
      /** Keys that may log in to machines nobody registered (only with boot: ramboot). */
      sshKeys: z.array(z.string().transform((k, ctx) => {
        try {
          return normalizeSshKey(k);
        } catch (e) {
          ctx.addIssue({ code: 'custom', message: (e as Error).message });
          return z.NEVER;
        }
      })).default([]),
      /** Cap on recorded unknown MACs, so a flood of fake MACs cannot fill the disk. */
      maxDiscovered: z.number().int().min(0).default(10000),
    })
    .default({ boot: 'local', image: 'default', sshKeys: [], maxDiscovered: 10000 }),
  /** A second listener for GET /metrics without the admin token (for a Prometheus on a trusted network). */
  metricsListen: listen('metricsListen').optional(),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type ConfigInput = z.input<typeof configSchema>;
type Parsed = z.output<typeof configSchema>;

export interface Config extends Omit<Parsed, 'publicUrl' | 'tftp'> {
  publicUrl: string;
  /** True when publicUrl was not given and had to be guessed. */
  publicUrlDerived: boolean;
  tftp: { enabled: boolean; listen: ListenAddress; ipxeDir: string };
}

export type { ServeFlags };

function firstExternalIPv4(): string | undefined {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

export function derivePublicUrl(l: ListenAddress): string {
  const wildcard = l.host === '0.0.0.0' || l.host === '::' || l.host === '';
  const host = wildcard ? (firstExternalIPv4() ?? '127.0.0.1') : l.host;
  const h = host.includes(':') ? `[${host}]` : host;
  return `http://${h}:${l.port}`;
}

function setPath(obj: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let o = obj;
  for (const k of path.slice(0, -1)) {
    const next = o[k];
    if (typeof next !== 'object' || next === null) o[k] = {};
    o = o[k] as Record<string, unknown>;
  }
  o[path.at(-1)!] = value;
}

/** The value one setting gets from a flag or environment string, or undefined when not given. */
function settingValue(s: Setting, raw: string | boolean | undefined, fromEnv: boolean): unknown {
  if (raw === undefined) return undefined;
  switch (s.kind) {
    case 'off-switch':
      // commander gives false for --no-x (true when absent); the environment says 1 or true
      if (fromEnv) return raw === '1' || raw === 'true' ? false : undefined;
      return raw === false ? false : undefined;
    case 'on-switch':
      if (fromEnv) return raw === '1' || raw === 'true' ? true : undefined;
      return raw === true ? true : undefined;
    case 'int':
      if (typeof raw !== 'string' || !/^\d+$/.test(raw)) throw new ConfigError(`${s.what ?? s.option}: "${String(raw)}" is not a whole number`);
      return Number(raw);
    default:
      return raw;
  }
}

function applyLayer(raw: Record<string, unknown>, values: (s: Setting) => string | boolean | undefined, fromEnv: boolean): void {
  for (const s of SETTINGS) {
    const v = settingValue(s, values(s), fromEnv);
    if (v === undefined) continue;
    setPath(raw, s.path, v);
    if (s.implies) setPath(raw, s.implies.path, s.implies.value);
  }
}

/**
 * Precedence: flags > environment (RAMBOOT_*) > YAML file (--config / RAMBOOT_CONFIG) > defaults.
 * Throws ConfigError naming every problem.
 */
export function loadConfig(flags: ServeFlags, env: NodeJS.ProcessEnv = process.env, isRoot = process.getuid?.() === 0): Config {
  const raw: Record<string, unknown> = {};
  const file = flags.config ?? env['RAMBOOT_CONFIG'];
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new ConfigError(`config file ${file}: ${(e as Error).message}`);
    }
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (e) {
      throw new ConfigError(`config file ${file} is not valid YAML: ${(e as Error).message}`);
    }
    if (doc !== null && doc !== undefined) {
      if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`config file ${file}: top level must be a mapping`);
      Object.assign(raw, doc);
    }
  }
  applyLayer(raw, (s) => env[s.env], true);
  applyLayer(raw, (s) => flags[s.option], false);

  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) throw new ConfigError(`invalid configuration: ${describeZodError(parsed.error)}`);
  const c = parsed.data;
  // TFTP: on port 69 when root; otherwise only when a listen address was given.
  const tftpListen = c.tftp.listen ?? { host: c.httpListen.host, port: 69 };
  const tftpEnabled = c.tftp.enabled ?? (c.tftp.listen !== undefined || isRoot);
  return {
    ...c,
    dataDir: resolve(c.dataDir),
    apiTokenFile: c.apiTokenFile ? resolve(c.apiTokenFile) : undefined,
    publicUrl: c.publicUrl ?? derivePublicUrl(c.httpListen),
    publicUrlDerived: c.publicUrl === undefined,
    tftp: { enabled: tftpEnabled, listen: tftpListen, ipxeDir: resolve(c.tftp.ipxeDir) },
  };
}
