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
  broken: 409,
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
  limit?: number;
  code?: string;
}

function sizeText(bytes: number): string {
  return bytes % 1024 === 0 ? `${bytes / 1024} KiB` : `${bytes} bytes`;
}

/** Status and client-safe message for an error; undefined for a fault of ours (500, logged). */
export function clientError(err: unknown): { status: number; message: string } | undefined {
  if (err instanceof HttpError) return { status: err.status, message: err.message };
  if (err instanceof RegistryError) return { status: REGISTRY_STATUS[err.kind], message: err.message };
  if (err instanceof ArtifactError) return { status: ARTIFACT_STATUS[err.kind], message: err.message };
  // a path parameter that is not valid percent-encoding (express decodes them)
  if (err instanceof URIError) return { status: 400, message: 'the URL has invalid percent-encoding' };
  if (!(err instanceof Error)) return undefined;
  const e = err as BodyParserError;
  if (typeof e.type === 'string') {
    if (e.type === 'entity.too.large') return { status: 413, message: `request body is larger than ${e.limit ? sizeText(e.limit) : 'allowed'}` };
    if (e.type === 'entity.parse.failed') return { status: 400, message: `request body is not valid JSON: ${e.message}` };
    if (e.type === 'encoding.unsupported') return { status: 415, message: e.message };
    return { status: e.status ?? 400, message: e.message };
  }
  // a Content-Encoding whose bytes do not decode (zlib / brotli errors)
  if (typeof e.code === 'string' && /^(Z_|ERR_BROTLI|ERR__?ZLIB)/.test(e.code)) return { status: 400, message: `request body does not decode as its Content-Encoding says (${e.code})` };
  if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) return { status: e.status, message: e.message };
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
