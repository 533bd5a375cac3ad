import { mkdir, realpath, stat } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import express from 'express';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Config } from './config.js';
import { derivePublicUrl } from './config.js';
import type { Logger } from '../common/log.js';
import { BootScripts } from './boot/boot-scripts.js';
import { cmdlineProblem } from './boot/ipxe-scripts.js';
import { PolicyBooter } from './boot/policy-booter.js';
import { RenderCache } from './boot/render-cache.js';
import { SessionMinter } from './boot/sessions.js';
import { EventBus } from './events/event-bus.js';
import { FileEventLog } from './events/event-log.js';
import { metricsRouter } from './http/metrics-route.js';
import { Metrics } from './metrics/metrics.js';
import { ArtifactStore } from './artifacts/artifact-store.js';
import { createApp } from './http/app.js';
import type { IpxeFilesDeps } from './http/ipxe-files-route.js';
import { startDhcpProxy, type DhcpProxy } from './dhcp/server.js';
import { ImageStore } from './images/image-store.js';
import { macForIPv4 } from './net/neighbours.js';
import { Registry } from './machines/registry.js';
import { loadApiToken, loadSessionSecret } from './secrets.js';
import { FileStore } from './store/file-store.js';
import { isSizeProbe } from './tftp/events.js';
import { startTftpServer, type TftpServer, type TftpTransferEvent } from './tftp/server.js';

/** Debian's ipxe.efi in /usr/lib/ipxe is a symlink into /boot. */
const IPXE_SYMLINK_ROOTS = ['/boot', '/usr/lib/ipxe'];

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
  /** Live timeline events (what GET /api/v1/events/stream sends). */
  bus: EventBus;
  metrics: Metrics;
  /** Where the token-less metrics listener is (--metrics-listen), when set. */
  metricsUrl?: string;
  close(): Promise<void>;
}

function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function listenHttp(server: Server, host: string, port: number, what = 'HTTP'): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (e: NodeJS.ErrnoException) => {
      reject(new StartupError(`cannot listen on ${host}:${port} for ${what}: ${e.code === 'EADDRINUSE' ? 'address already in use' : e.code === 'EACCES' ? 'permission denied (ports below 1024 need root)' : e.message}`));
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
    let publicUrl = config.publicUrl;
    const registry = new Registry(store, events, images, logger, config.unknownMachines.maxDiscovered, {
      cmdline: (mac, image, kernelArgs) => cmdlineProblem(image, { mac, publicUrl, kernelArgs }),
    }, artifacts);
    const metrics = new Metrics(() => registry.list());
    const bus = new EventBus();
    registry.onEvent((mac, ev) => {
      metrics.timelineEvent(mac, ev);
      bus.publish(mac, ev);
    });
    const booter = new PolicyBooter({ machines: registry, images, unknown: { boot: config.unknownMachines.boot, image: config.unknownMachines.image } });
    const sessions = new SessionMinter(secret, config.sessionTtlSeconds);
    const scripts = new BootScripts({ cache, sessions, imagesVersion: () => images.version, publicUrl: () => publicUrl });

    const ipxeFiles = await ipxeFilesDeps(config.tftp.ipxeDir, logger);
    const app = createApp({ ipxeFiles, metrics, bus, registry, booter, scripts, sessions, images, artifacts, cache, logger, apiToken: token.token, publicUrl: () => publicUrl, unknownSshKeys: config.unknownMachines.sshKeys });
    // the header and request timeouts are enforced on this tick (Node's default: 30 s)
    const server = createServer({ connectionsCheckingInterval: Math.min(1000, config.http.headersTimeoutMs) }, app);
    server.keepAliveTimeout = 10_000;
    // Limits on receiving a request (not on streaming a response): a slow client cannot hold sockets.
    // By default no limit on a whole request's duration (an artifact upload of many GiB takes as long
    // as it takes); a connection idle for 2 minutes (no byte either way) is closed instead.
    server.requestTimeout = config.http.requestTimeoutMs;
    server.timeout = 120_000;
    server.headersTimeout = config.http.requestTimeoutMs > 0 ? Math.min(config.http.headersTimeoutMs, config.http.requestTimeoutMs) : config.http.headersTimeoutMs;
    server.maxConnections = config.http.maxConnections;
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
          symlinkRoots: IPXE_SYMLINK_ROOTS,
          onTransfer: (ev) => {
            metrics.tftp(ev);
            void recordTftp(registry, ev);
          },
          onRefused: () => metrics.tftpRefused(),
        });
      } catch (e) {
        throw new StartupError(`cannot start TFTP on ${config.tftp.listen.host}:${config.tftp.listen.port}: ${(e as Error).message} (use --tftp-listen ADDR:PORT or --no-tftp)`);
      }
      cleanups.push(() => tftp?.close());
    }
    let proxy: DhcpProxy | undefined;
    if (config.proxyDhcp.enabled) {
      const p = config.proxyDhcp;
      const urlHost = new URL(publicUrl).hostname;
      const serverIp = p.serverIp ?? (p.interface ? undefined : isIPv4(urlHost) ? urlHost : undefined);
      if (!serverIp && !p.interface) throw new StartupError('--proxy-dhcp needs the boot server\'s IPv4 address: pass --dhcp-interface IFACE (or proxyDhcp.serverIp, or an IPv4 --public-url)');
      try {
        proxy = await startDhcpProxy({
          booter,
          logger,
          record: (mac, ev) => {
            metrics.dhcp(ev);
            return registry.bootEvent(mac, ev);
          },
          ...(p.interface ? { interface: p.interface } : {}),
          ...(serverIp ? { serverIp } : {}),
          ipxeScriptUrl: `${publicUrl}/boot.ipxe`,
          bootFiles: p.bootFiles,
          ...(p.httpBoot ? { httpBootUrl: `${publicUrl}/ipxe/ipxe.efi` } : {}),
        });
      } catch (e) {
        throw new StartupError(`cannot start the proxyDHCP: ${(e as Error).message} (UDP 67 and 4011 need root or CAP_NET_BIND_SERVICE)`);
      }
      cleanups.push(() => proxy?.close());
    }
    let metricsUrl: string | undefined;
    if (config.metricsListen) {
      // its own listener: GET /metrics without the admin token, nothing else
      const mapp = express();
      mapp.disable('x-powered-by');
      mapp.use(metricsRouter(metrics));
      mapp.use((_req, res) => void res.status(404).type('text/plain').send('only /metrics here\n'));
      const mserver = createServer(mapp);
      const maddr = await listenHttp(mserver, config.metricsListen.host, config.metricsListen.port, 'metrics');
      cleanups.push(() => closeServer(mserver));
      metricsUrl = `http://${maddr.family === 'IPv6' ? `[${maddr.address}]` : maddr.address}:${maddr.port}`;
      logger.info({ event: 'metrics.listening', url: metricsUrl }, `metrics on ${metricsUrl}/metrics (no token)`);
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
      bus,
      metrics,
      ...(metricsUrl ? { metricsUrl } : {}),
      close: closeAll,
    };
  } catch (e) {
    await closeAll();
    throw e;
  }
}

/** The iPXE directory and the places its symlinks may point into, as real paths (for GET /ipxe/{file}). */
async function ipxeFilesDeps(dir: string, logger: Logger): Promise<IpxeFilesDeps | undefined> {
  const real = await realpath(dir).catch(() => undefined);
  if (!real) return undefined;
  const roots = (await Promise.all(IPXE_SYMLINK_ROOTS.map((r) => realpath(r).catch(() => undefined)))).filter((r): r is string => !!r);
  return { ipxeDir: real, symlinkRoots: roots, logger };
}

async function recordTftp(registry: Registry, ev: TftpTransferEvent): Promise<void> {
  const mac = await macForIPv4(ev.client.address);
  if (!mac) return; // registry.event ignores MACs not in the registry
  await registry.bootEvent(mac, {
    event: 'tftp.transfer',
    // EDK2 (OVMF) asks for the size first and aborts with ERROR 8 once it has it: routine, not a warning
    level: ev.outcome === 'ok' || isSizeProbe(ev) ? 'info' : 'warning',
    message: isSizeProbe(ev)
      ? `TFTP ${ev.file}: size probe (${ev.options['tsize'] ?? '?'} bytes)`
      : `TFTP ${ev.file}: ${ev.outcome}${ev.error ? ` (${ev.error})` : ''}, ${ev.bytes} bytes in ${ev.durationMs} ms`,
    data: { ...ev },
  });
}
