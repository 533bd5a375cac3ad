import express, { type Express } from 'express';
import type { Logger } from '../../common/log.js';
import type { ArtifactStore } from '../artifacts/artifact-store.js';
import type { ImageStore } from '../images/image-store.js';
import type { Registry } from '../machines/registry.js';
import { macForIPv4 } from '../net/neighbours.js';
import type { EventBus } from '../events/event-bus.js';
import type { Metrics } from '../metrics/metrics.js';
import { adminRouter } from './admin-api.js';
import { requireToken } from './auth.js';
import { eventStreamRouter } from './events-stream.js';
import { metricsRouter } from './metrics-route.js';
import { uiRouter } from './ui-route.js';
import { artifactsRouter } from './artifacts-api.js';
import { deployRouter } from './deploy-routes.js';
import { errorHandler } from './error-handler.js';
import { imagesRouter } from './images-route.js';
import { ipxeFilesRouter, type IpxeFilesDeps } from './ipxe-files-route.js';
import { ipxeRouter, type IpxeRoutesDeps } from './ipxe-routes.js';
import { requestLog } from './request-log.js';
import { seedRouter, type SeedRoutesDeps } from './seed-routes.js';

export interface AppDeps extends Omit<IpxeRoutesDeps, 'record' | 'onScript'>, SeedRoutesDeps {
  apiToken: string;
  images: ImageStore;
  artifacts: ArtifactStore;
  registry: Registry;
  logger: Logger;
  /** Prometheus metrics: counted for every request, served at GET /metrics (admin token). */
  metrics?: Metrics;
  /** Live timeline events for GET /api/v1/events/stream. */
  bus?: EventBus;
  /** iPXE binaries over HTTP (UEFI HTTP boot); absent when the iPXE directory does not exist. */
  ipxeFiles?: IpxeFilesDeps | undefined;
  /** SSE heartbeat period (tests shorten it). */
  sseHeartbeatMs?: number;
}

/** The HTTP server's routes: admin API (token), iPXE scripts, NoCloud seeds, image files. */
export function createApp(d: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('trust proxy', false);
  app.use(requestLog(d.logger));
  if (d.metrics) app.use(d.metrics.http());
  app.use(uiRouter());
  if (d.metrics) app.use(metricsRouter(d.metrics, requireToken(d.apiToken)));
  if (d.bus) app.use(eventStreamRouter(d.bus, requireToken(d.apiToken), d.sseHeartbeatMs ? { heartbeatMs: d.sseHeartbeatMs } : {}));
  // before the admin router: uploads stream to disk, past its JSON body parser and its /api 404
  app.use(artifactsRouter(d.artifacts, d.registry, d.apiToken));
  app.use(adminRouter(d.registry, d.apiToken));
  const metrics = d.metrics;
  app.use(ipxeRouter({ ...d, record: (mac, ev) => d.registry.bootEvent(mac, ev), onScript: metrics ? (decision) => metrics.bootScript(decision) : undefined }));
  // before the seed router, whose /cloud-init/:mac/:token/:file would answer <seed>deploy with 404
  app.use(deployRouter(d));
  app.use(seedRouter(d));
  if (d.ipxeFiles) app.use(ipxeFilesRouter(d.ipxeFiles));
  app.use(
    imagesRouter(d.images, d.logger, async (sent) => {
      // image requests carry no MAC; the neighbour table knows it when the client is on our link
      d.metrics?.imageSent(sent.image, sent.file, sent.bytes);
      const mac = await macForIPv4(sent.client);
      d.logger.info({ event: 'images.sent', ...sent, ...(mac ? { mac } : {}) }, `sent ${sent.image}/${sent.file} to ${mac ?? sent.client}`);
      if (mac) await d.registry.bootEvent(mac, { event: 'image.fetch', level: 'info', message: `fetched ${sent.image}/${sent.file} (${sent.status}) in ${sent.ms} ms`, data: { ...sent } });
    }),
  );
  app.use((_req, res) => {
    res.status(404).type('text/plain').send('not found\n');
  });
  app.use(errorHandler(d.logger));
  return app;
}
