import express, { Router, type Request, type Response } from 'express';
import { isIP } from 'node:net';
import { z } from 'zod';
import { hostnameProblem } from '../machines/hostname.js';
import type { Logger } from '../../common/log.js';
import { tryParseMac, type Mac } from '../../common/mac.js';
import type { Booter, BootFacts } from '../boot/booter.js';
import { metaData, networkConfig, userData, vendorData } from '../boot/cloud-config.js';
import { hostKeysFromPhoneHome } from '../boot/host-keys.js';
import { bootstrapScript, machineScript, seedUrl, TOKEN_PLACEHOLDER } from '../boot/ipxe-scripts.js';
import type { RenderCache } from '../boot/render-cache.js';
import type { SessionMinter, SessionInfo } from '../boot/sessions.js';
import type { ImageStore } from '../images/image-store.js';
import type { MachineRecord } from '../machines/model.js';
import { etagOf, type Registry } from '../registry.js';

export interface BootRoutesDeps {
  registry: Registry;
  booter: Booter;
  sessions: SessionMinter;
  images: ImageStore;
  cache: RenderCache;
  logger: Logger;
  publicUrl: () => string;
  /** Keys that may log in to discovered machines booted by the unknown-machine policy. */
  unknownSshKeys: string[];
}

const IPXE_TYPE = 'text/plain; charset=utf-8';

function one(q: unknown): string | undefined {
  return typeof q === 'string' ? q : undefined;
}

/** What iPXE reported, validated; unusable values are dropped, not trusted. */
export function bootFacts(query: Request['query']): BootFacts {
  const facts: BootFacts = {};
  const platform = one(query['platform']);
  if (platform && /^[a-z0-9_-]{1,16}$/.test(platform)) facts.platform = platform;
  const arch = one(query['buildarch']);
  if (arch && /^[a-z0-9_-]{1,16}$/.test(arch)) facts.buildarch = arch;
  const mem = one(query['memsize']);
  if (mem && /^\d{1,9}$/.test(mem)) facts.memsizeMiB = Number(mem);
  const uuid = one(query['uuid']);
  if (uuid && /^[0-9a-fA-F-]{1,36}$/.test(uuid)) facts.uuid = uuid.toLowerCase();
  const serial = one(query['serial']);
  if (serial && /^[\x20-\x7e]{1,64}$/.test(serial)) facts.serial = serial;
  return facts;
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
  event: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'event: 1-64 chars of a-z 0-9 . _ -'),
  message: z.string().max(1024).optional(),
});

/** Boot-time endpoints: no admin token; NoCloud data only with a live boot session token. */
export function bootRouter(d: BootRoutesDeps): Router {
  const r = Router();
  const log = d.logger;

  r.get('/boot.ipxe', (_req, res) => {
    res.type(IPXE_TYPE).set('Cache-Control', 'no-store').send(bootstrapScript(d.publicUrl()));
  });

  r.get('/ipxe', async (req, res) => {
    const mac = tryParseMac(one(req.query['mac']) ?? '');
    if (!mac) {
      log.warn({ event: 'ipxe.bad-mac', client: req.ip, mac: String(req.query['mac'] ?? '').slice(0, 40) }, 'per-MAC script asked for without a valid mac');
      res.status(400).type('text/plain').send('mac query parameter missing or not a MAC address\n');
      return;
    }
    res.locals['mac'] = mac;
    const facts = bootFacts(req.query);
    let machine = d.registry.store.get(mac);
    if (!machine) machine = await d.registry.discover(mac, { ...facts, ip: req.ip });
    let decision = await d.booter.decide(machine, facts);
    if (!machine && decision.kind === 'ramboot') {
      // over the discovery cap: without a record there is no NoCloud data to serve
      decision = { kind: 'refuse', reason: 'ramboot has too many unregistered machines; register this one' };
    }
    const cacheKey = `ipxe|${machine ? etagOf(machine) : ''}|${d.images.version}|${facts.platform ?? ''}|${facts.buildarch ?? ''}|${facts.memsizeMiB ?? ''}|${d.publicUrl()}`;
    let script = d.cache.get(mac, cacheKey);
    if (script === undefined) {
      script = machineScript(decision, { mac, hostname: machine?.hostname, publicUrl: d.publicUrl(), platform: facts.platform, kernelArgs: machine?.kernelArgs ?? '' }, TOKEN_PLACEHOLDER);
      d.cache.set(mac, cacheKey, script);
    }
    if (decision.kind === 'ramboot') {
      const { token, session } = d.sessions.mint(mac);
      script = script.replaceAll(TOKEN_PLACEHOLDER, token);
      log.info({ event: 'ipxe.ramboot', mac, image: decision.image.name, mode: decision.mode, session: session.id.slice(0, 8), ...facts }, `${mac} boots image ${decision.image.name}`);
      void d.registry.event(mac, { event: 'ipxe.script', level: 'info', message: `served boot script for image ${decision.image.name} (${decision.mode})`, data: { ...facts, ip: req.ip, session: session.id.slice(0, 8) } });
    } else if (decision.kind === 'local') {
      log.info({ event: 'ipxe.local', mac, reason: decision.reason, ...facts }, `${mac} ${decision.reason}: boot local disk`);
      void d.registry.event(mac, { event: 'ipxe.local', level: 'info', message: `told to boot the local disk (${decision.reason})`, data: { ...facts, ip: req.ip } });
    } else {
      const why = decision.detail ?? decision.reason;
      log.warn({ event: 'ipxe.refused', mac, reason: why, ...facts }, `${mac} not booted: ${why}`);
      void d.registry.event(mac, { event: 'ipxe.refused', level: 'warning', message: why, data: { ...facts, ip: req.ip } });
    }
    res.type(IPXE_TYPE).set('Cache-Control', 'no-store').send(script);
  });

  /** Resolve :mac/:token to a live session, or answer 404 (and log) and return undefined. */
  const live = (req: Request, res: Response): { mac: Mac; machine: MachineRecord; session: SessionInfo; token: string } | undefined => {
    const mac = tryParseMac(one(req.params['mac']) ?? '');
    const token = one(req.params['token']) ?? '';
    if (mac) res.locals['mac'] = mac;
    const result = mac ? d.sessions.verify(mac, token) : ({ ok: false, reason: 'malformed' } as const);
    const machine = mac ? d.registry.store.get(mac) : undefined;
    const used = result.ok && machine ? machine.status.usedSessions.includes(result.session.id) : false;
    if (!mac || !result.ok || !machine || (used && req.method === 'GET')) {
      const reason = !mac ? 'bad MAC' : !result.ok ? result.reason : !machine ? 'machine not registered' : 'session already phoned home';
      log.warn({ event: 'seed.refused', mac: mac ?? undefined, client: req.ip, reason, path: req.path.split('/').pop() }, `refused NoCloud request: ${reason}`);
      res.status(404).type('text/plain').send('not found\n');
      return undefined;
    }
    return { mac, machine, session: result.session, token };
  };

  r.get('/cloud-init/:mac/:token/:file', (req, res) => {
    const file = req.params.file;
    if (!['meta-data', 'user-data', 'vendor-data', 'network-config'].includes(file)) {
      res.status(404).type('text/plain').send('not found\n');
      return;
    }
    const s = live(req, res);
    if (!s) return;
    let body: string;
    if (file === 'user-data') {
      const key = `ud|${etagOf(s.machine)}|${d.publicUrl()}`;
      let cached = d.cache.get(s.mac, key);
      if (cached === undefined) {
        const m = s.machine.discovered ? { ...s.machine, sshKeys: d.unknownSshKeys } : s.machine;
        cached = userData(m, seedUrl(d.publicUrl(), s.mac, TOKEN_PLACEHOLDER));
        d.cache.set(s.mac, key, cached);
      }
      body = cached.replaceAll(TOKEN_PLACEHOLDER, s.token);
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
    const ip = req.ip?.replace(/^::ffff:/, '');
    const outcome = await d.registry.phoneHome(s.mac, { sessionId: s.session.id, hostKeys, hostname: reportedHostname(body), ip: ip && isIP(ip) ? ip : undefined });
    if (outcome === 'accepted') res.status(200).type('text/plain').send('ok\n');
    else if (outcome === 'duplicate') res.status(409).type('text/plain').send('this boot session already phoned home\n');
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
    // timeline names of OS events live under "os." (the OS may already send "os.booted")
    const name = parsed.data.event.startsWith('os.') ? parsed.data.event : `os.${parsed.data.event}`;
    await d.registry.event(s.mac, { event: name, level: 'info', message, data: { ip: req.ip } });
    res.status(204).end();
  });

  return r;
}
