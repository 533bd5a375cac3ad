import type { Request, Response } from 'express';
import type { Logger } from '../../common/log.js';
import { tryParseMac, type Mac } from '../../common/mac.js';
import type { SessionInfo, SessionMinter } from '../boot/sessions.js';
import { isSessionUsed, type MachineRecord } from '../machines/model.js';
import type { Registry } from '../machines/registry.js';
import { pathParam } from './params.js';

/** A request under <public-url>/cloud-init/{mac}/{token}/ whose token is a live boot session of a registered machine. */
export interface LiveSession {
  mac: Mac;
  machine: MachineRecord;
  session: SessionInfo;
  token: string;
}

export interface LiveSessionDeps {
  registry: Registry;
  sessions: SessionMinter;
  logger: Logger;
}

export interface LiveSessionOptions {
  /**
   * Refuse GETs once the session has phoned home (NoCloud data is read before phone-home, never
   * after). The deploy endpoints pass false: the agent may still be fetching after phone-home.
   */
  refuseAfterPhoneHome: boolean;
}

/**
 * Resolve :mac/:token to a live session, or answer 404 (and log why) and return undefined. The
 * one session check every boot-time endpoint under <seed> shares.
 */
export function liveSession(d: LiveSessionDeps, req: Request, res: Response, opts: LiveSessionOptions): LiveSession | undefined {
  const mac = tryParseMac(pathParam(req, 'mac'));
  const token = pathParam(req, 'token');
  if (mac) res.locals['mac'] = mac;
  const result = mac ? d.sessions.verify(mac, token) : ({ ok: false, reason: 'malformed' } as const);
  const machine = mac ? d.registry.get(mac) : undefined;
  const used = result.ok && machine ? isSessionUsed(machine.status, result.session) : false;
  const refuseUsed = opts.refuseAfterPhoneHome && used && (req.method === 'GET' || req.method === 'HEAD');
  if (!mac || !result.ok || !machine || refuseUsed) {
    const reason = !mac ? 'bad MAC' : !result.ok ? result.reason : !machine ? 'machine not registered' : 'session already phoned home';
    d.logger.warn({ event: 'seed.refused', mac: mac ?? undefined, client: req.ip, reason, path: req.path.split('/').pop() }, `refused NoCloud request: ${reason}`);
    res.status(404).type('text/plain').send('not found\n');
    return undefined;
  }
  return { mac, machine, session: result.session, token };
}
