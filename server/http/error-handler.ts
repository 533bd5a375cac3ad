import type { ErrorRequestHandler } from 'express';
import type { Logger } from '../../common/log.js';
import { ArtifactError, type ArtifactErrorKind } from '../artifacts/artifact-store.js';
import { RegistryError, type RegistryErrorKind } from '../machines/errors.js';
import { HttpError } from './http-error.js';
import { redactUrl } from './request-log.js';

/** The one place registry errors become status codes. */
const REGISTRY_STATUS: Record<RegistryErrorKind, number> = {
  'not-found': 404,
  'precondition-failed': 412,
  invalid: 400,
};

const ARTIFACT_STATUS: Record<ArtifactErrorKind, number> = {
  'invalid-name': 400,
  'not-found': 404,
  exists: 412,
  incomplete: 400,
};

interface BodyParserError extends Error {
  type?: string;
  status?: number;
}

/** Status and client-safe message for an error; undefined for a fault of ours (500, logged). */
export function clientError(err: unknown): { status: number; message: string } | undefined {
  if (err instanceof HttpError) return { status: err.status, message: err.message };
  if (err instanceof RegistryError) return { status: REGISTRY_STATUS[err.kind], message: err.message };
  if (err instanceof ArtifactError) return { status: ARTIFACT_STATUS[err.kind], message: err.message };
  if (err instanceof Error && typeof (err as BodyParserError).type === 'string') {
    const e = err as BodyParserError;
    if (e.type === 'entity.too.large') return { status: 413, message: 'request body is larger than 256 KiB' };
    if (e.type === 'entity.parse.failed') return { status: 400, message: `request body is not valid JSON: ${e.message}` };
    return { status: e.status ?? 400, message: e.message };
  }
  return undefined;
}

/** Last middleware: JSON errors under /api, one text line elsewhere; faults of ours logged once. */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    let known = clientError(err);
    if (!known) {
      logger.error({ event: 'http.error', err, url: redactUrl(req.originalUrl) }, 'unhandled error');
      known = { status: 500, message: 'internal error' };
    }
    if (res.headersSent) return;
    if (req.path.startsWith('/api/')) res.status(known.status).json({ error: known.message });
    else res.status(known.status).type('text/plain').send(`${known.message}\n`);
  };
}
