import { Router, type RequestHandler } from 'express';
import type { Metrics } from '../metrics/metrics.js';

/** GET /metrics in Prometheus text format, behind `guard` (the admin token on the main listener). */
export function metricsRouter(metrics: Metrics, guard?: RequestHandler): Router {
  const r = Router();
  const handlers: RequestHandler[] = guard ? [guard] : [];
  r.get('/metrics', ...handlers, async (_req, res) => {
    const { contentType, body } = await metrics.text();
    res.set('Cache-Control', 'no-store').type(contentType).send(body);
  });
  return r;
}
