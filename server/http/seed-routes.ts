import express, { Router, type Request, type Response } from 'express';
import { isIP } from 'node:net';
import { z } from 'zod';
import { OS_EVENT_RE, osEventName } from '../../common/event-names.js';
import type { Logger } from '../../common/log.js';
import { metaData, networkConfig, userData, vendorData } from '../boot/cloud-config.js';
import { hostKeysFromPhoneHome, validHostKeys } from '../boot/host-keys.js';
import { seedUrl, TOKEN_PLACEHOLDER } from '../boot/ipxe-scripts.js';
import type { RenderCache } from '../boot/render-cache.js';
import type { SessionMinter } from '../boot/sessions.js';
import { hostnameProblem } from '../machines/hostname.js';
import { etagOf, type Registry } from '../machines/registry.js';
import { liveSession, type LiveSession } from './live-session.js';
import { pathParam } from './params.js';

export interface SeedRoutesDeps {
  registry: Registry;
  sessions: SessionMinter;
  cache: RenderCache;
  logger: Logger;
  publicUrl: () => string;
  /** Keys that may log in to discovered machines booted by the unknown-machine policy. */
  unknownSshKeys: string[];
}

/** The host name a phone-home reports (fqdn, else hostname), only if it is a valid RFC 1123 name. */
export function reportedHostname(body: Record<string, unknown>): string | undefined {
  for (const field of ['fqdn', 'hostname']) {
    const v = body[field];
    if (typeof v === 'string' && v !== 'N/A' && hostnameProblem(v) === undefined) return v.toLowerCase();
  }
  return undefined;
}

const eventBody = z.strictObject({
  event: z.string().regex(OS_EVENT_RE, 'event: 1-64 chars of a-z 0-9 . _ -'),
  message: z.string().max(1024).optional(),
});

/** The address a report came from (IPv4-mapped IPv6 written as IPv4), or undefined. */
function clientIp(req: Request): string | undefined {
  const ip = req.ip?.replace(/^::ffff:/, '');
  return ip && isIP(ip) ? ip : undefined;
}

const hostKeysBody = z.strictObject({ keys: z.array(z.string().max(16_384)).min(1).max(8) });

const SEED_FILES = ['meta-data', 'user-data', 'vendor-data', 'network-config'];

/** NoCloud seed under <public-url>/cloud-init/{mac}/{token}/: served only with a live boot session token. */
export function seedRouter(d: SeedRoutesDeps): Router {
  const r = Router();
  const log = d.logger;

  const live = (req: Request, res: Response): LiveSession | undefined => liveSession(d, req, res, { refuseAfterPhoneHome: true });

  const renderUserData = (s: LiveSession): string => {
    const key = `ud|${etagOf(s.machine)}|${d.publicUrl()}`;
    let cached = d.cache.get(s.mac, key);
    if (cached === undefined) {
      const m = s.machine.discovered ? { ...s.machine, sshKeys: d.unknownSshKeys } : s.machine;
      cached = userData(m, seedUrl(d.publicUrl(), s.mac, TOKEN_PLACEHOLDER));
      d.cache.set(s.mac, key, cached);
    }
    return cached.replaceAll(TOKEN_PLACEHOLDER, s.token);
  };

  r.get('/cloud-init/:mac/:token/:file', (req, res) => {
    const file = pathParam(req, 'file');
    if (!SEED_FILES.includes(file)) {
      res.status(404).type('text/plain').send('not found\n');
      return;
    }
    const s = live(req, res);
    if (!s) return;
    let body: string;
    if (file === 'user-data') {
      body = renderUserData(s);
      log.info({ event: 'seed.user-data', mac: s.mac, client: req.ip }, `${s.mac} fetched its user-data`);
      void d.registry.event(s.mac, { event: 'cloud-init.user-data', level: 'info', message: 'fetched NoCloud user-data', data: { ip: req.ip } });
    } else if (file === 'meta-data') body = metaData(s.machine, s.session.id);
    else if (file === 'vendor-data') body = vendorData();
    else body = networkConfig();
    res.type('text/plain; charset=utf-8').set('Cache-Control', 'no-store').send(body);
  });

  const formOrJson = [express.urlencoded({ extended: false, limit: '64kb' }), express.json({ limit: '64kb' })];

  r.post('/cloud-init/:mac/:token/phone-home', ...formOrJson, async (req, res) => {
    const s = live(req, res);
    if (!s) return;
    const body: Record<string, unknown> = typeof req.body === 'object' && req.body !== null ? (req.body as Record<string, unknown>) : {};
    const hostKeys = hostKeysFromPhoneHome(body);
    const outcome = await d.registry.phoneHome(s.mac, { sessionId: s.session.id, sessionExpiresAt: s.session.expiresAt, hostKeys, hostname: reportedHostname(body), ip: clientIp(req) });
    if (outcome === 'accepted') res.status(200).type('text/plain').send('ok\n');
    else if (outcome === 'duplicate') res.status(409).type('text/plain').send('this boot session already phoned home\n');
    else res.status(404).type('text/plain').send('not found\n');
  });

  r.post('/cloud-init/:mac/:token/host-keys', express.json({ limit: '8kb' }), async (req, res) => {
    const s = live(req, res);
    if (!s) return;
    const parsed = hostKeysBody.safeParse(req.body);
    const hostKeys = parsed.success ? validHostKeys(parsed.data.keys) : [];
    if (hostKeys.length === 0) {
      res.status(400).json({ error: 'body must be {"keys": ["<type> <base64>", ...]} with at least one valid SSH public key' });
      return;
    }
    const outcome = await d.registry.hostKeys(s.mac, { sessionId: s.session.id, sessionExpiresAt: s.session.expiresAt, hostKeys, ip: clientIp(req) });
    if (outcome === 'accepted') res.status(204).end();
    else if (outcome === 'used') res.status(409).type('text/plain').send('this boot session already phoned home\n');
    else res.status(404).type('text/plain').send('not found\n');
  });

  r.post('/cloud-init/:mac/:token/event', express.json({ limit: '8kb' }), async (req, res) => {
    const s = live(req, res);
    if (!s) return;
    const parsed = eventBody.safeParse(req.body);
    if (!parsed.success) {
      res.status(400).json({ error: parsed.error.issues.map((i) => i.message).join('; ') });
      return;
    }
    const message = (parsed.data.message ?? '').replace(/[^\x20-\x7e]/g, ' ');
    log.info({ event: 'os.event', mac: s.mac, osEvent: parsed.data.event, message }, `${s.mac}: ${parsed.data.event}`);
    await d.registry.event(s.mac, { event: osEventName(parsed.data.event), level: 'info', message, data: { ip: req.ip } });
    res.status(204).end();
  });

  return r;
}
