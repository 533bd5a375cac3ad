import { Router, type Request } from 'express';
import type { Logger } from '../../common/log.js';
import { FileVerifier } from '../images/file-check.js';
import type { ImageStore } from '../images/image-store.js';
import { IMAGE_FILE_RE, IMAGE_NAME_RE } from '../../common/manifest.js';
import { sendFile } from './file-sender.js';

/**
 * GET|HEAD /images/{name}/{file}: only files listed in the image's manifest, found by name (never by
 * a client-supplied path), with Content-Length, Range and a strong ETag (the file's sha256).
 */
export interface ImageSent {
  image: string;
  file: string;
  ms: number;
  client: string;
  status: number;
  range: string | undefined;
  /** Bytes of the file read for this response (the whole file, or the range asked for). */
  bytes: number;
}

/**
 * RFC 9110 14.1.2: a suffix range longer than the representation means all of it. `send` (under sendFile) answers
 * such a range with 416; rewrite it to the whole file.
 */
export function fixLongSuffixRange(req: Request, size: number): void {
  const range = req.headers.range;
  const m = range ? /^bytes=-(\d+)$/.exec(range.trim()) : null;
  if (m && Number(m[1]) > size && size > 0) req.headers.range = 'bytes=0-';
}

export function imagesRouter(images: ImageStore, logger: Logger, onSent: (s: ImageSent) => Promise<void> | void = () => undefined): Router {
  const r = Router();
  const verifier = new FileVerifier();
  r.get('/images/:name/:file', async (req, res, next) => {
    const { name, file } = req.params;
    if (!IMAGE_NAME_RE.test(name) || !IMAGE_FILE_RE.test(file)) {
      res.status(400).type('text/plain').send('bad image or file name\n');
      return;
    }
    const found = await images.lookup(name);
    if (!found.ok) {
      res.status(404).type('text/plain').send(`no image "${name}"\n`);
      return;
    }
    const entry = images.filePath(found.image, file);
    if (!entry) {
      res.status(404).type('text/plain').send(`image "${name}" has no file "${file}"\n`);
      return;
    }
    const check = await verifier.check(entry.path, entry);
    if (!check.ok) {
      logger.error({ event: 'images.file-mismatch', image: name, file, path: entry.path, reason: check.reason }, `refusing to serve ${name}/${file}: it ${check.reason} (rebuild the image or restore the file)`);
      res.status(503).type('text/plain').send(`image "${name}" file "${file}" does not match its manifest on the server\n`);
      return;
    }
    fixLongSuffixRange(req, entry.size);
    res.setHeader('ETag', `"${entry.sha256}"`);
    res.setHeader('Cache-Control', 'no-cache');
    const started = Date.now();
    sendFile(req, res, entry.path, {
      dotfiles: 'deny',
      onError: (err) => {
        if (err.status === 404) {
          logger.error({ event: 'images.file-missing', image: name, file, path: entry.path }, `image ${name} lists ${file} but it is missing on disk`);
          res.status(404).type('text/plain').send(`image "${name}" file "${file}" is missing on the server\n`);
        } else if (err.status !== undefined && err.status < 500) {
          // 412 (If-Match), 416 (Range): the client's request, not a server fault
          res.status(err.status).end();
        } else next(err);
      },
      onAborted: (reason, bytes) => logger.info({ event: 'images.fetch-aborted', image: name, file, client: req.ip, bytes, reason }, `${name}/${file} to ${req.ip ?? '?'} stopped after ${bytes} bytes: ${reason}`),
      onSent: (bytes) => {
        void onSent({ image: name, file, ms: Date.now() - started, client: req.ip ?? '', status: res.statusCode, range: req.get('range'), bytes });
      },
    });
  });
  return r;
}
