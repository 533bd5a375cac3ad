import express, { Router } from 'express';
import { z } from 'zod';
import type { Logger } from '../../common/log.js';
import type { Mac } from '../../common/mac.js';
import { ARTIFACT_NAME_RE, type ArtifactStore } from '../artifacts/artifact-store.js';
import { seedUrl } from '../boot/ipxe-scripts.js';
import type { SessionMinter } from '../boot/sessions.js';
import type { DeployRecord } from '../machines/model.js';
import type { Registry } from '../machines/registry.js';
import { sendFile } from './file-sender.js';
import { liveSession } from './live-session.js';
import { pathParam } from './params.js';

export interface DeployRoutesDeps {
  registry: Registry;
  sessions: SessionMinter;
  artifacts: ArtifactStore;
  logger: Logger;
  publicUrl: () => string;
  /** Minimum time between two deploy.progress events of one machine (default 2000 ms). */
  progressIntervalMs?: number;
}

/** A number the agent may send as null when it does not know it (total, ETA). */
const count = z.number().nonnegative().finite().nullable().optional();

const statusBody = z.strictObject({
  id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'id: the deploy attempt id'),
  state: z.enum(['started', 'progress', 'succeeded', 'failed']),
  stage: z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'stage: 1-32 of a-z 0-9 -').optional(),
  message: z.string().max(2048).optional(),
  bytes: count,
  total: count,
  rateBps: count,
  etaSeconds: count,
  seconds: count,
  disk: z.string().max(256).optional(),
});

/** What GET <seed>deploy answers: the contract with the deploy agent (boot-assets/hooks/files/ramboot-deploy). */
export interface DeployDocument {
  id: string;
  source: { url: string; sha256: string | null; size: number | null; format: 'raw' | 'zstd' | 'xz' | 'gzip' | 'qcow2' | null };
  disk: DeployRecord['disk'];
  after: DeployRecord['after'];
  grow: boolean;
}

const printable = (s: string) => s.replace(/[^\x20-\x7e]/g, ' ');
const num = (v: number | null | undefined) => (v === null || v === undefined ? undefined : v);

/**
 * Deploy endpoints under the NoCloud seed (<public-url>/cloud-init/{mac}/{token}/), for the deploy
 * agent in the RAM OS; each needs a live boot session of the machine (also after phone-home):
 *   GET  deploy               204 (no deploy) or the deploy document
 *   GET  artifacts/{name}     the artifact's bytes, only when the machine's deploy names it
 *   POST deploy/status        the agent's reports -> deploy.* timeline events
 */
export function deployRouter(d: DeployRoutesDeps): Router {
  const r = Router();
  const live = (req: express.Request, res: express.Response) => liveSession(d, req, res, { refuseAfterPhoneHome: false });
  const progressEvery = d.progressIntervalMs ?? 2000;
  /** Per MAC: when its last progress event was recorded (server-side rate limit). */
  const lastProgress = new Map<Mac, number>();

  r.get('/cloud-init/:mac/:token/deploy', async (req, res) => {
    const s = live(req, res);
    if (!s) return;
    const dep = s.machine.deploy;
    res.set('Cache-Control', 'no-store');
    if (!dep) {
      res.status(204).end();
      return;
    }
    let source: DeployDocument['source'];
    if (dep.artifact !== undefined) {
      const meta = await d.artifacts.get(dep.artifact);
      if (!meta) {
        // deleted behind the registry's back (by hand): say so rather than hand out a dead URL
        d.logger.error({ event: 'deploy.artifact-missing', mac: s.mac, artifact: dep.artifact }, `deploy of ${s.mac} names artifact ${dep.artifact}, which is gone`);
        res.status(503).type('text/plain').send(`artifact ${dep.artifact} is missing on the server\n`);
        return;
      }
      source = { url: `${seedUrl(d.publicUrl(), s.mac, s.token)}artifacts/${meta.name}`, sha256: meta.sha256, size: meta.size, format: meta.format };
    } else {
      source = { url: dep.url ?? '', sha256: dep.sha256 ?? null, size: null, format: null };
    }
    const doc: DeployDocument = { id: dep.id, source, disk: dep.disk, after: dep.after, grow: dep.grow };
    res.json(doc);
  });

  r.get('/cloud-init/:mac/:token/artifacts/:name', async (req, res, next) => {
    const name = pathParam(req, 'name');
    const s = live(req, res);
    if (!s) return;
    // Only the artifact this machine's deploy names: a session is not a key to the whole store.
    if (!ARTIFACT_NAME_RE.test(name) || s.machine.deploy?.artifact !== name) {
      d.logger.warn({ event: 'artifacts.refused', mac: s.mac, artifact: name.slice(0, 64) }, `${s.mac} asked for artifact it is not assigned`);
      res.status(404).type('text/plain').send('not found\n');
      return;
    }
    const meta = await d.artifacts.get(name);
    if (!meta) {
      res.status(404).type('text/plain').send('not found\n');
      return;
    }
    res.setHeader('ETag', `"${meta.sha256}"`);
    res.setHeader('Cache-Control', 'no-cache');
    res.type('application/octet-stream');
    const started = Date.now();
    sendFile(req, res, d.artifacts.blobPath(meta), {
      dotfiles: 'allow',
      onError: (err) => {
        if (err.status !== undefined && err.status < 500) res.status(err.status).end();
        else next(err);
      },
      onAborted: (reason, bytes) =>
        d.logger.info({ event: 'artifacts.fetch-aborted', mac: s.mac, artifact: name, bytes, reason }, `artifact ${name} to ${s.mac} stopped after ${bytes} bytes: ${reason}`),
      onSent: (bytes) => {
        if (req.method !== 'GET') return;
        void d.registry.event(s.mac, {
          event: 'artifact.fetch',
          level: 'info',
          message: `fetched artifact ${name} (${res.statusCode}${req.get('range') ? `, ${printable(req.get('range') ?? '').slice(0, 64)}` : ''}) in ${Date.now() - started} ms`,
          data: { artifact: name, status: res.statusCode, range: req.get('range'), bytes, ms: Date.now() - started, client: req.ip },
        });
      },
    });
  });

  r.post('/cloud-init/:mac/:token/deploy/status', express.json({ limit: '16kb' }), async (req, res) => {
    const s = live(req, res);
    if (!s) return;
    const parsed = statusBody.safeParse(req.body);
    if (!parsed.success) {
      res.status(400).json({ error: parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ') });
      return;
    }
    const b = parsed.data;
    if (b.state === 'progress') {
      // Checked before the registry so that a flood costs no timeline write; a stale id still gets 409 below.
      const now = Date.now();
      const last = lastProgress.get(s.mac) ?? 0;
      if (now - last < progressEvery && s.machine.deploy?.id === b.id && s.machine.status.deploy?.id !== b.id) {
        res.status(204).end();
        return;
      }
      lastProgress.set(s.mac, now);
    } else if (b.state !== 'started') lastProgress.delete(s.mac);
    const { outcome } = await d.registry.deployReport(s.mac, {
      id: b.id,
      state: b.state,
      stage: b.stage,
      message: b.message === undefined ? undefined : printable(b.message).slice(0, 1024),
      bytes: num(b.bytes),
      total: num(b.total),
      rateBps: num(b.rateBps),
      etaSeconds: num(b.etaSeconds),
      seconds: num(b.seconds),
      disk: b.disk === undefined || b.disk === '' ? undefined : printable(b.disk),
    });
    if (outcome === 'accepted') res.status(204).end();
    else if (outcome === 'unknown') res.status(404).type('text/plain').send('not found\n');
    else {
      const why = outcome === 'stale' ? `deploy ${b.id} is not this machine's current deploy attempt` : `deploy ${b.id} already ${s.machine.status.deploy?.state ?? 'finished'}`;
      d.logger.warn({ event: 'deploy.status-refused', mac: s.mac, id: b.id, state: b.state, reason: outcome }, why);
      res.status(409).type('text/plain').send(`${why}\n`);
    }
  });

  return r;
}
