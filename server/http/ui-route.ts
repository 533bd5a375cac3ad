import { readFileSync } from 'node:fs';
import { Router } from 'express';
import { assetPath } from '../../common/assets.js';

/** The admin page's files (boot-assets/ui/), by fixed name: nothing else under it is reachable. */
const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

/** Only this origin's own scripts and styles; the page talks to this server only; no framing. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/**
 * GET / (the admin web page) and GET /ui/{file}. The page holds no secret: it asks for the admin
 * token and sends it as a Bearer header to the API like any other client.
 */
export function uiRouter(): Router {
  const r = Router();
  // read once: a few tens of KB, and a missing file is a packaging error seen at the first request
  const cache = new Map<string, Buffer>();
  const load = (name: string): Buffer => {
    let b = cache.get(name);
    if (!b) {
      b = readFileSync(assetPath('ui', name));
      cache.set(name, b);
    }
    return b;
  };
  const serve = (name: string, res: import('express').Response) => {
    res.set({ 'Content-Security-Policy': CSP, 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer', 'Cache-Control': 'no-cache' });
    res.type(FILES[name]!).send(load(name));
  };
  r.get('/', (_req, res) => serve('index.html', res));
  r.get('/ui/:file', (req, res, next) => {
    const f = req.params.file;
    if (!Object.hasOwn(FILES, f)) return next();
    serve(f, res);
  });
  return r;
}
