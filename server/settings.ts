/**
 * Every setting of `ramboot serve` once: its flag, its environment variable and where it lands in
 * the YAML/config object. Flags (cli/serve-command.ts), the environment and the file are all read
 * through this table (server/config.ts), so a new setting is one row here plus its schema entry.
 */
export interface Setting {
  /** commander flag spec, e.g. "--data-dir <dir>". */
  flag: string;
  /** The property commander stores the flag under (camelCase of the flag; "--no-x" -> "x"). */
  option: string;
  env: string;
  /** Where the value goes in the config object (the YAML keys). */
  path: readonly string[];
  help: string;
  /** Shown in --help: what applies when the setting is not given. */
  default?: string;
  /** How a flag/env string becomes a config value (default: as is). */
  kind?: 'string' | 'int' | 'off-switch' | 'on-switch';
  /** Name used in messages about a bad value. */
  what?: string;
  /** Given (by flag or environment), it also sets this. */
  implies?: { path: readonly string[]; value: unknown };
}

export const SETTINGS: readonly Setting[] = [
  { flag: '--data-dir <dir>', option: 'dataDir', env: 'RAMBOOT_DATA_DIR', path: ['dataDir'], help: 'data directory', default: './var' },
  { flag: '--http-listen <addr:port>', option: 'httpListen', env: 'RAMBOOT_HTTP_LISTEN', path: ['httpListen'], help: 'HTTP listen address', default: '0.0.0.0:8080' },
  { flag: '--public-url <url>', option: 'publicUrl', env: 'RAMBOOT_PUBLIC_URL', path: ['publicUrl'], help: 'URL booting machines use to reach this server', default: 'derived from the listen address' },
  { flag: '--api-token-file <file>', option: 'apiTokenFile', env: 'RAMBOOT_API_TOKEN_FILE', path: ['apiTokenFile'], help: 'admin API token file', default: '<data-dir>/api-token, generated' },
  {
    flag: '--tftp-listen <addr:port>', option: 'tftpListen', env: 'RAMBOOT_TFTP_LISTEN', path: ['tftp', 'listen'], help: 'TFTP listen address', default: 'port 69 when root',
    implies: { path: ['tftp', 'enabled'], value: true },
  },
  { flag: '--no-tftp', option: 'tftp', env: 'RAMBOOT_NO_TFTP', path: ['tftp', 'enabled'], kind: 'off-switch', help: 'do not run the TFTP server' },
  { flag: '--ipxe-dir <dir>', option: 'ipxeDir', env: 'RAMBOOT_IPXE_DIR', path: ['tftp', 'ipxeDir'], help: 'directory of iPXE binaries served over TFTP', default: '/usr/lib/ipxe' },
  { flag: '--unknown-boot <mode>', option: 'unknownBoot', env: 'RAMBOOT_UNKNOWN_BOOT', path: ['unknownMachines', 'boot'], help: 'what unregistered machines boot: local | ramboot', default: 'local' },
  { flag: '--session-ttl <seconds>', option: 'sessionTtl', env: 'RAMBOOT_SESSION_TTL', path: ['sessionTtlSeconds'], kind: 'int', what: 'session TTL', help: 'lifetime of a boot session token', default: '3600' },
  { flag: '--http-max-connections <n>', option: 'httpMaxConnections', env: 'RAMBOOT_HTTP_MAX_CONNECTIONS', path: ['http', 'maxConnections'], kind: 'int', what: 'HTTP connection cap', help: 'open HTTP connections at most (more are closed at once)', default: '4096' },
  { flag: '--http-headers-timeout <ms>', option: 'httpHeadersTimeout', env: 'RAMBOOT_HTTP_HEADERS_TIMEOUT', path: ['http', 'headersTimeoutMs'], kind: 'int', what: 'HTTP headers timeout', help: 'time a client has to send its request headers, ms', default: '30000' },
  { flag: '--http-request-timeout <ms>', option: 'httpRequestTimeout', env: 'RAMBOOT_HTTP_REQUEST_TIMEOUT', path: ['http', 'requestTimeoutMs'], kind: 'int', what: 'HTTP request timeout', help: 'time a client has to send a whole request, ms (0: no limit; idle connections are closed after 2 minutes either way)', default: '0' },
  { flag: '--metrics-listen <addr:port>', option: 'metricsListen', env: 'RAMBOOT_METRICS_LISTEN', path: ['metricsListen'], help: 'also serve GET /metrics here, without the admin token', default: 'off (GET /metrics on the HTTP port, with the token)' },
  { flag: '--proxy-dhcp', option: 'proxyDhcp', env: 'RAMBOOT_PROXY_DHCP', path: ['proxyDhcp', 'enabled'], kind: 'on-switch', help: 'answer netboot clients\' DHCP with boot information only (addresses stay with the site\'s DHCP server); needs UDP 67 and 4011' },
  { flag: '--dhcp-interface <iface>', option: 'dhcpInterface', env: 'RAMBOOT_DHCP_INTERFACE', path: ['proxyDhcp', 'interface'], help: 'interface whose IPv4 address the proxyDHCP names as the boot server', default: 'the address of --public-url' },
  { flag: '--log-level <level>', option: 'logLevel', env: 'RAMBOOT_LOG_LEVEL', path: ['logLevel'], help: 'fatal|error|warn|info|debug|trace', default: 'info' },
];

/** Flags as commander hands them over. */
export type ServeFlags = { config?: string } & { [option: string]: string | boolean | undefined };

/** The --help text of a setting: what it does, its environment variable and default. */
export function settingHelp(s: Setting): string {
  const env = s.kind === 'off-switch' || s.kind === 'on-switch' ? `${s.env}=1` : s.env;
  return `${s.help} (env ${env}${s.default ? `; default ${s.default}` : ''})`;
}
