import express, { type Express } from 'express';
import type { Logger } from '../../common/log.js';
import type { ArtifactStore } from '../artifacts/artifact-store.js';
import type { ImageStore } from '../images/image-store.js';
import type { Registry } from '../machines/registry.js';
import { macForIPv4 } from '../net/neighbours.js';
import { adminRouter } from './admin-api.js';
import { artifactsRouter } from './artifacts-api.js';
import { deployRouter } from './deploy-routes.js';
import { errorHandler } from './error-handler.js';
import { imagesRouter } from './images-route.js';
import { ipxeRouter, type IpxeRoutesDeps } from './ipxe-routes.js';
import { requestLog } from './request-log.js';
import { seedRouter, type SeedRoutesDeps } from './seed-routes.js';

export interface AppDeps extends Omit<IpxeRoutesDeps, 'record'>, SeedRoutesDeps {
  apiToken: string;
  images: ImageStore;
  artifacts: ArtifactStore;
  registry: Registry;
  logger: Logger;
}

/** The HTTP server's routes: admin API (token), iPXE scripts, NoCloud seeds, image files. */
export function createApp(d: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('trust proxy', false);
  app.use(requestLog(d.logger));
  // before the admin router: uploads stream to disk, past its JSON body parser and its /api 404
  app.use(artifactsRouter(d.artifacts, d.registry, d.apiToken));
  app.use(adminRouter(d.registry, d.apiToken));
  app.use(ipxeRouter({ ...d, record: (mac, ev) => d.registry.event(mac, ev) }));
  // before the seed router, whose /cloud-init/:mac/:token/:file would answer <seed>deploy with 404
  app.use(deployRouter(d));
  app.use(seedRouter(d));
  app.use(
    imagesRouter(d.images, d.logger, async (sent) => {
      // image requests carry no MAC; the neighbour table knows it when the client is on our link
      const mac = await macForIPv4(sent.client);
      d.logger.info({ event: 'images.sent', ...sent, ...(mac ? { mac } : {}) }, `sent ${sent.image}/${sent.file} to ${mac ?? sent.client}`);
      if (mac) await d.registry.event(mac, { event: 'image.fetch', level: 'info', message: `fetched ${sent.image}/${sent.file} (${sent.status}) in ${sent.ms} ms`, data: { ...sent } });
    }),
  );
  app.use((_req, res) => {
    res.status(404).type('text/plain').send('not found\n');
  });
  app.use(errorHandler(d.logger));
  return app;
}
