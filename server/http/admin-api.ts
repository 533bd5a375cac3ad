import express, { Router, type Request, type Response } from 'express';
import type { ZodType } from 'zod';
import { jsonTextDepth, MAX_JSON_DEPTH } from '../../common/json-limits.js';
import { parseMac, MacError, type Mac } from '../../common/mac.js';
import { knownHostsLines } from '../boot/host-keys.js';
import { describeZodError } from '../../common/zod-error.js';
import { clientEventSchema, toNewEvent } from '../events/client-event.js';
import { machinePatchSchema, machineSpecSchema, type MachineRecord } from '../machines/model.js';
import { etagOf, type Registry } from '../machines/registry.js';
import { requireToken } from './auth.js';
import { HttpError } from './http-error.js';

export const BODY_LIMIT = '256kb';

/** Refuses a body nested deeper than ramboot stores, before it is parsed. */
function refuseDeepJson(_req: unknown, _res: unknown, buf: Buffer): void {
  if (jsonTextDepth(buf) > MAX_JSON_DEPTH) throw new HttpError(400, `request body is nested deeper than ${MAX_JSON_DEPTH} levels`);
}

function macParam(req: Request): Mac {
  const raw = req.params['mac'];
  try {
    return parseMac(typeof raw === 'string' ? raw : '');
  } catch (e) {
    throw new HttpError(400, e instanceof MacError ? e.message : 'bad MAC');
  }
}

/** Path of the first "__proto__" / "constructor" / "prototype" key, which a plain-object copy would silently drop or misuse. */
function reservedKeyPath(v: unknown, path: string): string | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  for (const [k, child] of Object.entries(v)) {
    if (k === '__proto__' || k === 'constructor' || k === 'prototype') return `${path}${k}`;
    const deeper = reservedKeyPath(child, `${path}${k}.`);
    if (deeper) return deeper;
  }
  return undefined;
}

function validBody<T>(schema: ZodType<T>, req: Request): T {
  if (!req.is('application/json')) throw new HttpError(415, 'request body must be JSON (Content-Type: application/json)');
  const body: unknown = req.body;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'request body must be a JSON object');
  const reserved = reservedKeyPath(body, '');
  if (reserved) throw new HttpError(400, `${reserved}: "${reserved.split('.').pop()}" is not allowed as a key`);
  const res = schema.safeParse(body);
  if (!res.success) throw new HttpError(400, describeZodError(res.error));
  return res.data;
}

function view(r: MachineRecord): Record<string, unknown> {
  const { status, ...rest } = r;
  const { usedSessions, sessionsUsedUntil: _internal, ...pub } = status;
  return { ...rest, status: { ...pub, bootSessionsCompleted: usedSessions.length } };
}

function sendMachine(res: Response, r: MachineRecord, code = 200): void {
  res.status(code).set('ETag', etagOf(r)).json(view(r));
}

/** Admin API under /api/v1, Bearer token required. */
export function adminRouter(registry: Registry, token: string): Router {
  const r = Router();
  r.use('/api', requireToken(token));
  r.use('/api', express.json({ limit: BODY_LIMIT, strict: true, verify: refuseDeepJson }));

  r.get('/api/v1/machines', (_req, res) => {
    res.json({ machines: registry.list().map(view), broken: registry.broken() });
  });

  r.get('/api/v1/machines/:mac', (req, res) => {
    const mac = macParam(req);
    const m = registry.get(mac);
    if (!m) throw registry.missing(mac);
    sendMachine(res, m);
  });

  r.put('/api/v1/machines/:mac', async (req, res) => {
    const mac = macParam(req);
    const spec = validBody(machineSpecSchema, req);
    const explicitImage = typeof (req.body as Record<string, unknown>)['image'] === 'string';
    const { record, created } = await registry.put(mac, spec, explicitImage, { ifMatch: req.get('if-match'), ifNoneMatch: req.get('if-none-match') });
    sendMachine(res, record, created ? 201 : 200);
  });

  r.patch('/api/v1/machines/:mac', async (req, res) => {
    const mac = macParam(req);
    const patch = validBody(machinePatchSchema, req);
    sendMachine(res, await registry.patch(mac, patch, req.get('if-match')));
  });

  r.delete('/api/v1/machines/:mac', async (req, res) => {
    const mac = macParam(req);
    await registry.remove(mac, req.get('if-match'));
    res.status(204).end();
  });

  r.get('/api/v1/machines/:mac/events', async (req, res) => {
    const mac = macParam(req);
    const limitRaw = typeof req.query['limit'] === 'string' ? req.query['limit'] : undefined;
    if (limitRaw !== undefined && !/^\d{1,4}$/.test(limitRaw)) throw new HttpError(400, 'limit must be a number 0-9999');
    res.json({ mac, events: await registry.timeline(mac, limitRaw ? Number(limitRaw) : undefined) });
  });

  // What the admin's client does to a machine from outside (a transfer), on the machine's timeline.
  r.post('/api/v1/machines/:mac/events', async (req, res) => {
    const mac = macParam(req);
    const ev = validBody(clientEventSchema, req);
    res.status(201).json(await registry.clientEvent(mac, toNewEvent(ev)));
  });

  r.get('/api/v1/machines/:mac/known_hosts', (req, res) => {
    const mac = macParam(req);
    const m = registry.get(mac);
    if (!m) throw registry.missing(mac);
    // Only names the admin gave and the address the machine was seen at: a name the booting
    // machine reported is its own claim and never becomes trust in known_hosts.
    const names = [m.status.ip, m.hostname].filter((x): x is string => !!x);
    res.type('text/plain; charset=utf-8').send(knownHostsLines(names, m.status.hostKeys));
  });

  r.use('/api', (_req, _res) => {
    throw new HttpError(404, 'no such API endpoint');
  });
  return r;
}
