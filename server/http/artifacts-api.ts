import { Router, type Request } from 'express';
import { artifactNameProblem, type ArtifactStore } from '../artifacts/artifact-store.js';
import type { Registry } from '../machines/registry.js';
import { requireToken } from './auth.js';
import { HttpError } from './http-error.js';
import { pathParam } from './params.js';

function nameParam(req: Request): string {
  const name = pathParam(req, 'name');
  const problem = artifactNameProblem(name);
  if (problem) throw new HttpError(400, problem);
  return name;
}

/**
 * Admin API for deploy artifacts (Bearer token), mounted before the JSON body parser so an upload
 * streams straight to disk:
 *   PUT    /api/v1/artifacts/{name}   raw bytes of any size (If-None-Match: * = create only)
 *   GET    /api/v1/artifacts          list;  GET /api/v1/artifacts/{name}: one
 *   DELETE /api/v1/artifacts/{name}   409 while a machine's deploy names it
 */
export function artifactsRouter(artifacts: ArtifactStore, registry: Registry, token: string): Router {
  const r = Router();
  r.use('/api/v1/artifacts', requireToken(token));

  r.put('/api/v1/artifacts/:name', async (req, res) => {
    const name = nameParam(req);
    const inm = req.get('if-none-match');
    if (inm !== undefined && inm.trim() !== '*') throw new HttpError(400, 'If-None-Match: only "*" (create only) is supported');
    const cl = req.get('content-length');
    if (cl !== undefined && !/^\d{1,16}$/.test(cl)) throw new HttpError(400, 'bad Content-Length');
    try {
      const { meta, created } = await artifacts.put(name, req, { createOnly: inm !== undefined, expectedSize: cl === undefined ? undefined : Number(cl) });
      res.status(created ? 201 : 200).set('ETag', `"${meta.sha256}"`).json(meta);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOSPC') throw new HttpError(507, 'no space left on the server for this artifact');
      throw e;
    }
  });

  r.get('/api/v1/artifacts', async (_req, res) => {
    res.json({ artifacts: await artifacts.list() });
  });

  r.get('/api/v1/artifacts/:name', async (req, res) => {
    const name = nameParam(req);
    const meta = await artifacts.get(name);
    if (!meta) throw new HttpError(404, `no artifact ${name}`);
    res.set('ETag', `"${meta.sha256}"`).json(meta);
  });

  r.delete('/api/v1/artifacts/:name', async (req, res) => {
    const name = nameParam(req);
    const users = registry.list().filter((m) => m.deploy?.artifact === name).map((m) => m.mac);
    if (users.length > 0) throw new HttpError(409, `artifact ${name} is named by the deploy of ${users.join(', ')}; clear or change those first`);
    await artifacts.remove(name);
    res.status(204).end();
  });
  return r;
}
