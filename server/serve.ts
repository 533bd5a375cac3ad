import { mkdir, stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Config } from './config.js';
import { derivePublicUrl } from './config.js';
import type { Logger } from '../common/log.js';
import { BootScripts } from './boot/boot-scripts.js';
import { PolicyBooter } from './boot/policy-booter.js';
import { RenderCache } from './boot/render-cache.js';
import { SessionMinter } from './boot/sessions.js';
import { FileEventLog } from './events/event-log.js';
import { ArtifactStore } from './artifacts/artifact-store.js';
import { createApp } from './http/app.js';
import { ImageStore } from './images/image-store.js';
import { macForIPv4 } from './net/neighbours.js';
import { Registry } from './machines/registry.js';
import { loadApiToken, loadSessionSecret } from './secrets.js';
import { FileStore } from './store/file-store.js';
import { startTftpServer, type TftpServer, type TftpTransferEvent } from './tftp/server.js';

export class StartupError extends Error {
  override name = 'StartupError';
}

export interface Ramboot {
  /** Where the HTTP server listens (actual port when 0 was asked). */
  httpUrl: string;
  publicUrl: string;
  apiToken: string;
  apiTokenFile: string;
  apiTokenGenerated: boolean;
  tftp?: { address: string; port: number };
  registry: Registry;
  close(): Promise<void>;
}

function listenHttp(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      reject(new StartupError(`cannot listen on ${host}:${port} for HTTP: ${e.code === 'EADDRINUSE' ? 'address already in use' : e.code === 'EACCES' ? 'permission denied (ports below 1024 need root)' : e.message}`));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Start everything `ramboot serve` runs. Nothing is left running when it throws. */
export async function startRamboot(config: Config, logger: Logger): Promise<Ramboot> {
  const cleanups: (() => Promise<void> | void)[] = [];
  const closeAll = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => undefined);
  };
  try {
    const { dataDir } = config;
    for (const d of [dataDir, join(dataDir, 'machines'), join(dataDir, 'images'), join(dataDir, 'events')]) {
      await mkdir(d, { recursive: true, mode: d === dataDir ? 0o755 : 0o700 }).catch((e: Error) => {
        throw new StartupError(`cannot create ${d}: ${e.message}`);
      });
    }
    const token = await loadApiToken(dataDir, config.apiTokenFile);
    const secret = await loadSessionSecret(dataDir);

    const store = await FileStore.open({ dir: join(dataDir, 'machines'), logger });
    cleanups.push(() => store.close());
    const events = new FileEventLog(join(dataDir, 'events'));
    await events.init();
    const images = new ImageStore(join(dataDir, 'images'), logger);
    await images.watch();
    cleanups.push(() => images.close());
    const cache = new RenderCache();
    cleanups.push(() => cache.close());
    store.onChange((mac) => cache.invalidate(mac));

    const artifacts = new ArtifactStore(join(dataDir, 'artifacts'), logger);
    await artifacts.init().catch((e: Error) => {
      throw new StartupError(`cannot set up ${artifacts.dir}: ${e.message}`);
    });
    const registry = new Registry(store, events, images, logger, config.unknownMachines.maxDiscovered, artifacts);
    const booter = new PolicyBooter({ machines: registry, images, unknown: { boot: config.unknownMachines.boot, image: config.unknownMachines.image } });
    const sessions = new SessionMinter(secret, config.sessionTtlSeconds);
    let publicUrl = config.publicUrl;
    const scripts = new BootScripts({ cache, sessions, imagesVersion: () => images.version, publicUrl: () => publicUrl });

    const app = createApp({ registry, booter, scripts, sessions, images, artifacts, cache, logger, apiToken: token.token, publicUrl: () => publicUrl, unknownSshKeys: config.unknownMachines.sshKeys });
    const server = createServer(app);
    server.keepAliveTimeout = 10_000;
    // Limits on receiving a request (not on streaming a response): a slow client cannot hold sockets.
    // No limit on a whole request's duration: an artifact upload of many GiB takes as long as it
    // takes; a connection idle for 2 minutes (no byte either way) is closed instead.
    server.requestTimeout = 0;
    server.timeout = 120_000;
    server.headersTimeout = 30_000;
    const addr = await listenHttp(server, config.httpListen.host, config.httpListen.port);
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );
    const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    const httpUrl = `http://${host}:${addr.port}`;
    if (config.publicUrlDerived) {
      publicUrl = derivePublicUrl({ host: config.httpListen.host, port: addr.port });
      logger.warn({ event: 'config.public-url-derived', publicUrl }, `no --public-url given; booting machines will be sent to ${publicUrl} (set --public-url if they cannot reach it)`);
    }

    let tftp: TftpServer | undefined;
    if (config.tftp.enabled) {
      const dir = config.tftp.ipxeDir;
      const st = await stat(dir).catch(() => undefined);
      if (!st?.isDirectory()) throw new StartupError(`--ipxe-dir ${dir} is not a directory (install Debian's ipxe package, point --ipxe-dir elsewhere, or pass --no-tftp)`);
      try {
        tftp = await startTftpServer({
          host: config.tftp.listen.host,
          port: config.tftp.listen.port,
          root: dir,
          logger,
          symlinkRoots: ['/boot', '/usr/lib/ipxe'],
          onTransfer: (ev) => void recordTftp(registry, ev),
        });
      } catch (e) {
        throw new StartupError(`cannot start TFTP on ${config.tftp.listen.host}:${config.tftp.listen.port}: ${(e as Error).message} (use --tftp-listen ADDR:PORT or --no-tftp)`);
      }
      cleanups.push(() => tftp?.close());
    }
    logger.info({ event: 'http.listening', url: httpUrl, port: addr.port, publicUrl, dataDir }, `HTTP on ${httpUrl}, machines boot from ${publicUrl}/boot.ipxe`);
    if (tftp) {
      const a = tftp.address();
      logger.info({ event: 'tftp.listening', address: a.address, port: a.port, root: config.tftp.ipxeDir }, `TFTP on ${a.address}:${a.port} serving ${config.tftp.ipxeDir}`);
    }
    return {
      httpUrl,
      publicUrl,
      apiToken: token.token,
      apiTokenFile: token.file,
      apiTokenGenerated: token.generated,
      tftp: tftp?.address(),
      registry,
      close: closeAll,
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}

async function recordTftp(registry: Registry, ev: TftpTransferEvent): Promise<void> {
  const mac = await macForIPv4(ev.client.address);
  if (!mac) return; // registry.event ignores MACs not in the registry
  await registry.event(mac, {
    event: 'tftp.transfer',
    // EDK2 (OVMF) asks for the size first and aborts with ERROR 8 once it has it: routine, not a warning
    level: ev.outcome === 'ok' || isSizeProbe(ev) ? 'info' : 'warning',
    message: isSizeProbe(ev)
      ? `TFTP ${ev.file}: size probe (${ev.options['tsize'] ?? '?'} bytes)`
      : `TFTP ${ev.file}: ${ev.outcome}${ev.error ? ` (${ev.error})` : ''}, ${ev.bytes} bytes in ${ev.durationMs} ms`,
    data: { ...ev },
  });
}

function isSizeProbe(ev: TftpTransferEvent): boolean {
  return ev.outcome === 'error' && ev.bytes === 0 && /^client error 8:/.test(ev.error ?? '');
}
