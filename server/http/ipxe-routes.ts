import { Router, type Request } from 'express';
import type { Logger } from '../../common/log.js';
import { tryParseMac } from '../../common/mac.js';
import type { BootDecision, Booter, BootFacts } from '../boot/booter.js';
import type { BootScripts } from '../boot/boot-scripts.js';
import { reportIpxeDecision, type RecordEvent } from '../boot/decision-report.js';
import { bootstrapScript } from '../boot/ipxe-scripts.js';
import { queryString } from './params.js';

export interface IpxeRoutesDeps {
  booter: Booter;
  scripts: BootScripts;
  record: RecordEvent;
  logger: Logger;
  publicUrl: () => string;
  /** Told of every per-MAC script served, with the decision it carries out (metrics). */
  onScript?: ((d: BootDecision) => void) | undefined;
}

const IPXE_TYPE = 'text/plain; charset=utf-8';

/** What iPXE reported, validated; unusable values are dropped, not trusted. */
export function bootFacts(query: Request['query']): BootFacts {
  const facts: BootFacts = {};
  const platform = queryString(query, 'platform');
  if (platform && /^[a-z0-9_-]{1,16}$/.test(platform)) facts.platform = platform;
  const arch = queryString(query, 'buildarch');
  if (arch && /^[a-z0-9_-]{1,16}$/.test(arch)) facts.buildarch = arch;
  const mem = queryString(query, 'memsize');
  if (mem && /^\d{1,9}$/.test(mem)) facts.memsizeMiB = Number(mem);
  const uuid = queryString(query, 'uuid');
  if (uuid && /^[0-9a-fA-F-]{1,36}$/.test(uuid)) facts.uuid = uuid.toLowerCase();
  const serial = queryString(query, 'serial');
  if (serial && /^[\x20-\x7e]{1,64}$/.test(serial)) facts.serial = serial;
  return facts;
}

/** GET /boot.ipxe (the bootstrap every iPXE chains) and GET /ipxe?mac= (the per-MAC script). */
export function ipxeRouter(d: IpxeRoutesDeps): Router {
  const r = Router();

  r.get('/boot.ipxe', (_req, res) => {
    res.type(IPXE_TYPE).set('Cache-Control', 'no-store').send(bootstrapScript(d.publicUrl()));
  });

  r.get('/ipxe', async (req, res) => {
    const mac = tryParseMac(queryString(req.query, 'mac') ?? '');
    if (!mac) {
      d.logger.warn({ event: 'ipxe.bad-mac', client: req.ip, mac: String(req.query['mac'] ?? '').slice(0, 40) }, 'per-MAC script asked for without a valid mac');
      res.status(400).type('text/plain').send('mac query parameter missing or not a MAC address\n');
      return;
    }
    res.locals['mac'] = mac;
    const facts = { ...bootFacts(req.query), ...(req.ip ? { ip: req.ip } : {}) };
    const { decision, script, session } = d.scripts.render(mac, await d.booter.decide({ mac, facts }), facts);
    reportIpxeDecision(d.logger, d.record, mac, decision, facts, session);
    d.onScript?.(decision);
    res.type(IPXE_TYPE).set('Cache-Control', 'no-store').send(script);
  });

  return r;
}
