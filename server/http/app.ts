import express, { type ErrorRequestHandler, type Express } from 'express';
import type { Logger } from '../../common/log.js';
import type { ImageStore } from '../images/image-store.js';
import { adminRouter } from './admin-api.js';
import { bootRouter, type BootRoutesDeps } from './boot-routes.js';
import { HttpError } from './http-error.js';
import { imagesRouter } from './images-route.js';
import { macForIPv4 } from '../net/neighbours.js';
import { redactUrl, requestLog } from './request-log.js';

export interface AppDeps extends BootRoutesDeps {
  apiToken: string;
  images: ImageStore;
  logger: Logger;
}

interface BodyParserError extends Error {
  type?: string;
  status?: number;
}

export function createApp(d: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('trust proxy', false);
  app.use(requestLog(d.logger));
  app.use(adminRouter(d.registry, d.apiToken));
  app.use(bootRouter(d));
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
  const onError: ErrorRequestHandler = (err: unknown, req, res, _next) => {
    const api = req.path.startsWith('/api/');
    let status = 500;
    let message = 'internal error';
    if (err instanceof HttpError) {
      status = err.status;
      message = err.message;
    } else if (err instanceof Error && typeof (err as BodyParserError).type === 'string') {
      const e = err as BodyParserError;
      if (e.type === 'entity.too.large') {
        status = 413;
        message = 'request body is larger than 256 KiB';
      } else if (e.type === 'entity.parse.failed') {
        status = 400;
        message = `request body is not valid JSON: ${e.message}`;
      } else {
        status = e.status ?? 400;
        message = e.message;
      }
    } else {
      d.logger.error({ event: 'http.error', err, url: redactUrl(req.originalUrl) }, 'unhandled error');
    }
    if (res.headersSent) return;
    if (api) res.status(status).json({ error: message });
    else res.status(status).type('text/plain').send(`${message}\n`);
  };
  app.use(onError);
  return app;
}
