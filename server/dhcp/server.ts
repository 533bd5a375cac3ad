/**
 * ProxyDHCP server: answers PXE / UEFI HTTP boot clients with a boot file (never an address) on
 * UDP 67, and PXE boot-server requests on UDP 4011. The site's DHCP server keeps handing out
 * addresses untouched. Decision and reply building are in proxy.ts; the codec in packet.ts.
 */
import { execFile } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { promisify } from 'node:util';
import { isIPv4 } from 'node:net';
import { networkInterfaces } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Booter } from '../boot/booter.js';
import type { NewEvent } from '../events/event-log.js';
import type { Logger } from '../../common/log.js';
import type { Mac } from '../../common/mac.js';
import { describeRequest, parsePacket } from './packet.js';
import { handleRequest, type ListenPort, type ProxyConfig, type ProxyOutcome } from './proxy.js';

const execFileP = promisify(execFile);

export interface DhcpProxyOptions {
  booter: Booter;
  logger: Logger;
  /** Appends to a machine's timeline (ramboot: `(mac, ev) => registry.event(mac, ev)`). */
  record?: (mac: Mac, ev: NewEvent) => Promise<void>;
  /**
   * Address the sockets bind (default 0.0.0.0). DHCPDISCOVERs are broadcast to 255.255.255.255, and
   * Linux delivers those only to sockets bound to 0.0.0.0 (or to 255.255.255.255): binding a unicast
   * address receives no DISCOVER at all. Keep the default.
   */
  listenAddress?: string;
  /**
   * Interface on the boot network. Node's dgram has no SO_BINDTODEVICE, so this does not restrict
   * which interface requests come in on; it picks `serverIp` (the interface's first IPv4 address)
   * when `serverIp` is not given. Broadcast replies leave through the interface owning `serverIp`.
   */
  interface?: string;
  /** This server's IPv4 address as clients reach it: option 54, siaddr (TFTP), reply source. */
  serverIp?: string;
  /** UDP ports: dhcp (default 67), pxe (default 4011; false = no PXE boot-server socket). */
  ports?: { dhcp?: number; pxe?: number | false };
  /** TFTP file names: bios (default undionly.kpxe), efi (default snponly.efi). */
  bootFiles?: { bios?: string; efi?: string };
  /**
   * URL of an EFI iPXE (e.g. ipxe.efi) over HTTP for UEFI HTTP boot (arch 16), or a function of
   * serverIp. Unset: HTTP boot clients are ignored (reason logged).
   */
  httpBootUrl?: string | ((serverIp: string) => string);
  /** <public-url>/boot.ipxe: what iPXE itself is told to load. */
  ipxeScriptUrl: string;
  /** Booter time budget per request (default 1500 ms; iPXE waits ~2 s for a ProxyDHCP offer). */
  decideTimeoutMs?: number;
  /** Requests decided at once; more are dropped (default 256). */
  maxInFlight?: number;
  /** Client port for replies (default 68) and relay port (default 67). For tests. */
  clientPort?: number;
  relayPort?: number;
}

export interface DhcpProxy {
  /** The bound sockets: dhcp and (unless disabled) pxe. */
  address(): { address: string; serverIp: string; dhcp: number; pxe: number | undefined };
  close(): Promise<void>;
}

export class DhcpConfigError extends Error {
  override name = 'DhcpConfigError';
}

const IFNAME_RE = /^[A-Za-z0-9_.:@-]{1,15}$/;

/**
 * First IPv4 address of a network interface, or undefined. Node's networkInterfaces() (libuv) lists
 * only interfaces that are up AND running, so a bridge without carrier yet (no VM attached) is
 * missing there; `ip -4 -o addr show dev IFACE` is asked then.
 */
export async function interfaceIPv4(name: string): Promise<string | undefined> {
  if (!IFNAME_RE.test(name)) return undefined;
  const listed = networkInterfaces()[name]?.find((a) => a.family === 'IPv4')?.address;
  if (listed) return listed;
  try {
    const { stdout } = await execFileP('ip', ['-4', '-o', 'addr', 'show', 'dev', name], { timeout: 5000 });
    const m = /\binet (\d+\.\d+\.\d+\.\d+)\//.exec(stdout);
    return m?.[1];
  } catch {
    return undefined;
  }
}

function bindUdp(address: string, port: number, reuseAddr: boolean): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket({ type: 'udp4', reuseAddr });
    const onError = (err: Error): void => {
      s.close();
      reject(err);
    };
    s.once('error', onError);
    s.bind({ address, port, exclusive: true }, () => {
      s.off('error', onError);
      resolve(s);
    });
  });
}

function checkFile(name: string, v: string): string {
  // must fit the 128-byte file field with its NUL, printable, no spaces
  if (!/^[\x21-\x7e]{1,127}$/.test(v)) throw new DhcpConfigError(`${name} "${v.slice(0, 40)}" must be 1-127 printable characters without spaces`);
  return v;
}

function checkPort(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 65535) throw new DhcpConfigError(`${name} must be a port number, got ${v}`);
  return v;
}

function closeSocket(s: Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      s.close(() => resolve());
    } catch {
      resolve();
    }
  });
}

export async function startDhcpProxy(opts: DhcpProxyOptions): Promise<DhcpProxy> {
  const { logger, booter } = opts;
  const listenAddress = opts.listenAddress ?? '0.0.0.0';
  if (!isIPv4(listenAddress)) throw new DhcpConfigError(`listenAddress ${listenAddress} is not an IPv4 address`);
  let serverIp = opts.serverIp;
  if (serverIp === undefined && opts.interface !== undefined) {
    serverIp = await interfaceIPv4(opts.interface);
    if (serverIp === undefined) throw new DhcpConfigError(`interface ${opts.interface} has no IPv4 address (or does not exist)`);
  }
  if (serverIp === undefined) throw new DhcpConfigError('serverIp (or interface) is required: clients must be told where the TFTP/HTTP server is');
  if (!isIPv4(serverIp) || serverIp === '0.0.0.0') throw new DhcpConfigError(`serverIp ${serverIp} is not a usable IPv4 address`);
  const ip = serverIp;
  const http = typeof opts.httpBootUrl === 'function' ? opts.httpBootUrl(ip) : opts.httpBootUrl;
  if (http !== undefined && !/^https?:\/\//.test(http)) throw new DhcpConfigError(`httpBootUrl ${http} must be an http(s) URL`);
  const cfg: ProxyConfig = {
    serverIp: ip,
    bootFileBios: checkFile('bootFiles.bios', opts.bootFiles?.bios ?? 'undionly.kpxe'),
    bootFileEfi: checkFile('bootFiles.efi', opts.bootFiles?.efi ?? 'snponly.efi'),
    httpBootUrl: http === undefined ? '' : checkFile('httpBootUrl', http),
    ipxeScriptUrl: checkFile('ipxeScriptUrl', opts.ipxeScriptUrl),
    decideTimeoutMs: opts.decideTimeoutMs ?? 1500,
    relayPort: checkPort('relayPort', opts.relayPort ?? 67),
    clientPort: checkPort('clientPort', opts.clientPort ?? 68),
  };
  const dhcpPort = checkPort('ports.dhcp', opts.ports?.dhcp ?? 67);
  const pxePortOpt = opts.ports?.pxe ?? 4011;
  const maxInFlight = opts.maxInFlight ?? 256;

  const sockets: Socket[] = [];
  let closed = false;
  let inFlight = 0;
  const closeAll = async (): Promise<void> => {
    closed = true;
    await Promise.all(sockets.map(closeSocket));
  };

  const record = (mac: Mac, ev: NewEvent): void => {
    if (!opts.record) return;
    opts.record(mac, ev).catch((e: unknown) => logger.error({ event: 'dhcp.record_failed', mac, err: String(e) }));
  };

  const send = (sock: Socket, outcome: Extract<ProxyOutcome, { kind: 'reply' }>): Promise<void> =>
    new Promise((resolve) => {
      if (closed) return resolve();
      sock.send(outcome.reply, outcome.to.port, outcome.to.address, (err) => {
        // a send error (no route, EPERM from a firewall) is like a lost packet: the client retries
        if (err) logger.warn({ event: 'dhcp.send_failed', mac: outcome.mac, to: outcome.to, err: err.message }, `proxyDHCP reply to ${outcome.to.address}:${outcome.to.port} failed: ${err.message}`);
        resolve();
      });
    });

  try {
    // Port 67: bound to 0.0.0.0 with SO_REUSEADDR so a DHCP server on this host that sets it too
    // (busybox udhcpd, ISC dhcpd with one interface) keeps working; both get every broadcast.
    const dhcpSock = await bindUdp(listenAddress, dhcpPort, true);
    sockets.push(dhcpSock);
    dhcpSock.setBroadcast(true);
    const boundDhcpPort = dhcpSock.address().port;
    // Broadcast replies go out of a second socket bound to serverIp: the kernel sends a limited
    // broadcast (255.255.255.255) through the interface owning the source address. From a 0.0.0.0
    // socket it would follow the default route (another interface, or ENETUNREACH without one).
    let bcastSock = dhcpSock;
    if (listenAddress === '0.0.0.0') {
      bcastSock = await bindUdp(ip, boundDhcpPort, true).catch((e: Error) => {
        throw new DhcpConfigError(`cannot bind ${ip}:${boundDhcpPort} for broadcast replies (${e.message}); is serverIp an address of this host?`);
      });
      sockets.push(bcastSock);
      bcastSock.setBroadcast(true);
    }
    let pxeSock: Socket | undefined;
    if (pxePortOpt !== false) {
      pxeSock = await bindUdp(listenAddress, checkPort('ports.pxe', pxePortOpt), false);
      sockets.push(pxeSock);
    }

    const onMessage = (port: ListenPort, sock: Socket) => (msg: Buffer, rinfo: { address: string; port: number }): void => {
      if (closed) return;
      const started = performance.now();
      const source = { address: rinfo.address, port: rinfo.port };
      const parsed = parsePacket(msg);
      if (!parsed.ok) {
        logger.debug({ event: 'dhcp.bad_packet', source, port, bytes: msg.length, code: parsed.error.code, reason: parsed.error.message }, `ignored a malformed DHCP packet: ${parsed.error.message}`);
        return;
      }
      const described = describeRequest(parsed.value);
      if (!described.ok) {
        logger.debug({ event: 'dhcp.bad_packet', source, port, bytes: msg.length, code: described.error.code, reason: described.error.message }, `ignored a malformed DHCP packet: ${described.error.message}`);
        return;
      }
      if (inFlight >= maxInFlight) {
        logger.warn({ event: 'dhcp.overload', source, inFlight }, 'proxyDHCP busy: request dropped');
        return;
      }
      inFlight++;
      void handleRequest({ packet: parsed.value, info: described.value, port, source }, cfg, booter)
        .then(async (out) => {
          const portNumber = port === 'dhcp' ? boundDhcpPort : (pxeSock?.address().port ?? 0);
          const data = {
            messageType: out.summary.messageType,
            arch: out.summary.arch,
            archName: out.summary.archName,
            clientType: out.summary.clientType,
            firmware: out.summary.firmware,
            port: portNumber,
            xid: out.summary.xid,
            ...(out.summary.uuid ? { uuid: out.summary.uuid } : {}),
            ...(out.summary.giaddr ? { giaddr: out.summary.giaddr } : {}),
            ...(out.summary.decision ? { decision: out.summary.decision } : {}),
          };
          if (out.kind === 'reply') {
            const replySock = out.to.broadcast ? bcastSock : sock;
            await send(replySock, out);
            const ms = Math.round((performance.now() - started) * 10) / 10;
            logger.info({ event: 'dhcp.offer', mac: out.mac, ...data, file: out.summary.file, source: out.summary.source, to: `${out.to.address}:${out.to.port}`, ms }, out.message);
            record(out.mac, { event: 'dhcp.offer', level: 'info', message: out.message, data: { ...data, file: out.summary.file, ms } });
          } else {
            const line = { event: 'dhcp.ignored', mac: out.summary.mac, ...data, source: out.summary.source, reason: out.reason };
            const text = `proxyDHCP ignored ${out.summary.messageType} from ${out.summary.mac ?? source.address}: ${out.reason}`;
            if (out.level === 'debug') logger.debug(line, text);
            else if (out.level === 'warning') logger.warn(line, text);
            else logger.info(line, text);
            if (out.recordFor) record(out.recordFor, { event: 'dhcp.ignored', level: out.level === 'warning' ? 'warning' : 'info', message: text, data: { ...data, reason: out.reason } });
          }
        })
        .catch((e: unknown) => logger.error({ event: 'dhcp.handler_failed', source, err: String(e) }, 'proxyDHCP request handling failed'))
        .finally(() => {
          inFlight--;
        });
    };
    const onError = (which: string) => (err: Error): void => {
      logger.error({ event: 'dhcp.socket_error', socket: which, err: err.message }, `proxyDHCP socket error (${which})`);
    };
    dhcpSock.on('message', onMessage('dhcp', dhcpSock));
    dhcpSock.on('error', onError('dhcp'));
    if (bcastSock !== dhcpSock) {
      // unicast to serverIp:67 lands on this more specific socket
      bcastSock.on('message', onMessage('dhcp', bcastSock));
      bcastSock.on('error', onError('dhcp-unicast'));
    }
    if (pxeSock) {
      pxeSock.on('message', onMessage('pxe', pxeSock));
      pxeSock.on('error', onError('pxe'));
    }
    const addr = {
      address: listenAddress,
      serverIp: ip,
      dhcp: boundDhcpPort,
      pxe: pxeSock?.address().port,
    };
    logger.info({ event: 'dhcp.listening', ...addr, bootFiles: { bios: cfg.bootFileBios, efi: cfg.bootFileEfi }, httpBootUrl: http, ipxeScriptUrl: cfg.ipxeScriptUrl }, `proxyDHCP on ${listenAddress}:${boundDhcpPort}${pxeSock ? ` and :${addr.pxe}` : ''}, boot server ${ip}`);
    return { address: () => ({ ...addr }), close: closeAll };
  } catch (e) {
    await closeAll();
    throw e;
  }
}
