import type { RequestHandler } from 'express';
import type { Logger } from '../../common/log.js';

/** Boot session tokens ride in URL paths; never write them to logs. */
export function redactUrl(url: string): string {
  return url.replace(/(\/cloud-init\/[^/]+\/)[^/?]+/, '$1<token>');
}

/** One JSON line per request; `mac` is added by boot routes via res.locals.mac. */
export function requestLog(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const mac = typeof res.locals['mac'] === 'string' ? res.locals['mac'] : undefined;
      const line = { event: 'http.request', method: req.method, url: redactUrl(req.originalUrl), status: res.statusCode, ms: Math.round(ms * 10) / 10, client: req.ip, ...(mac ? { mac } : {}) };
      if (res.statusCode >= 500) logger.error(line, 'request failed');
      else if (res.statusCode >= 400) logger.warn(line, 'request refused');
      else logger.debug(line, 'request');
    });
    next();
  };
}
