/**
 * `ramboot serve` plus the proxyDHCP, wired the way `ramboot serve --proxy-dhcp` will wire it, for
 * end-to-end tests until the integrator adds the flag: this file is both
 *  - a program (run inside a test network namespace): startRamboot() (HTTP, TFTP, registry) +
 *    startDhcpProxy() with a PolicyBooter over the same registry and images, recording to the
 *    registry's timelines; JSON log lines on stdout, like the real server;
 *  - the test-side launcher `startRambootWithProxy(t, ns, opts)` returning a RambootServer handle
 *    (admin API, log lines).
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../../common/log.js';
import { loadConfig } from '../../server/config.js';
import { PolicyBooter } from '../../server/boot/policy-booter.js';
import { startDhcpProxy } from '../../server/dhcp/server.js';
import { ImageStore } from '../../server/images/image-store.js';
import { startRamboot } from '../../server/serve.js';
import type { Netns } from './netns.js';
import { REPO_ROOT, testLogPath } from './paths.js';
import { ManagedProcess } from './process.js';
import { tieToTest, type TeardownTest } from './qemu.js';
import { RambootServer } from './ramboot-server.js';

export interface ProxyServerArgs {
  dataDir: string;
  /** host:port for HTTP (inside the namespace). */
  httpListen: string;
  publicUrl: string;
  apiTokenFile: string;
  tftpListen: string;
  ipxeDir: string;
  unknownBoot: 'local' | 'ramboot';
  /** The interface the proxy serves (serverIp = its address). */
  dhcpInterface: string;
  httpBootUrl?: string;
}

/** The program: runs until SIGTERM. */
async function main(args: ProxyServerArgs): Promise<void> {
  const logger = createLogger({ level: 'debug' });
  const config = loadConfig(
    { dataDir: args.dataDir, httpListen: args.httpListen, publicUrl: args.publicUrl, apiTokenFile: args.apiTokenFile, tftpListen: args.tftpListen, ipxeDir: args.ipxeDir, unknownBoot: args.unknownBoot },
    {},
    true,
  );
  const rb = await startRamboot(config, logger);
  // serve.ts builds its PolicyBooter from the registry and the image store; same here
  const images = new ImageStore(join(config.dataDir, 'images'), logger);
  const booter = new PolicyBooter({ machines: rb.registry, images, unknown: { boot: config.unknownMachines.boot, image: config.unknownMachines.image } });
  const proxy = await startDhcpProxy({
    booter,
    logger,
    record: (mac, ev) => rb.registry.event(mac, ev),
    interface: args.dhcpInterface,
    ipxeScriptUrl: `${rb.publicUrl}/boot.ipxe`,
    ...(args.httpBootUrl !== undefined ? { httpBootUrl: args.httpBootUrl } : {}),
  });
  const stop = (): void => {
    void Promise.all([proxy.close(), rb.close()]).finally(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

export interface ProxyServerOptions extends Omit<ProxyServerArgs, 'apiTokenFile' | 'httpListen'> {
  httpHost: string;
  httpPort: number;
  name?: string;
}

/** Starts the program in `ns` and ties it to the test; resolves once HTTP and the proxy listen. */
export async function startRambootWithProxy(t: TeardownTest, ns: Netns, opts: ProxyServerOptions): Promise<RambootServer> {
  const token = randomBytes(24).toString('hex');
  const tokenFile = join(opts.dataDir, 'test-api-token');
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  const { httpHost, httpPort, name = 'ramboot-proxy-dhcp', ...rest } = opts;
  const args: ProxyServerArgs = { ...rest, httpListen: `${httpHost}:${httpPort}`, apiTokenFile: tokenFile };
  const proc = new ManagedProcess({
    name,
    argv: ns.wrap(['setpriv', '--pdeathsig', 'KILL', '--', process.execPath, '--import', 'tsx', fileURLToPath(import.meta.url), JSON.stringify(args)]),
    cwd: REPO_ROOT,
    logFile: testLogPath(name),
  });
  const srv = new RambootServer(proc, httpHost, httpPort, opts.publicUrl, token, tokenFile, ns.wrap);
  tieToTest(t, { name, tail: (n) => srv.tail(n), stop: () => srv.stop(), logFile: proc.logFile });
  await proc.waitFor(/"event":"dhcp\.listening"/, { timeoutMs: 60_000, failOn: /"level":"(fatal|error)"|EADDRINUSE|Error:/, fromStart: true });
  return srv;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const raw = process.argv[2];
  if (!raw) {
    console.error('usage: proxy-dhcp-server.ts <json args>');
    process.exit(2);
  }
  main(JSON.parse(raw) as ProxyServerArgs).catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
