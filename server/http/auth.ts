import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Bearer-token check for the admin API; compares digests in constant time. */
export function requireToken(token: string): RequestHandler {
  const want = digest(token);
  return (req, res, next) => {
    const header = req.get('authorization') ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (m && timingSafeEqual(digest(m[1] ?? ''), want)) return next();
    res.set('WWW-Authenticate', 'Bearer realm="ramboot"');
    res.status(401).json({ error: m ? 'invalid API token' : 'missing API token (Authorization: Bearer <token>)' });
  };
}
