import { Router } from 'express';
import type { Logger } from '../../common/log.js';
import { openServedFile } from '../tftp/resolve.js';
import { pathParam } from './params.js';

export interface IpxeFilesDeps {
  /** The directory TFTP serves (--ipxe-dir), real path. */
  ipxeDir: string;
  /** Real paths a symlink in it may point into (Debian's ipxe.efi links into /boot). */
  symlinkRoots: readonly string[];
  logger: Logger;
}

/**
 * GET|HEAD /ipxe/{file}: the iPXE binaries over HTTP, for UEFI HTTP boot (the proxyDHCP hands out
 * <public-url>/ipxe/ipxe.efi). One file name directly in the iPXE directory, resolved the same way
 * TFTP resolves names (inside the directory by construction); no redirects.
 */
export function ipxeFilesRouter(d: IpxeFilesDeps): Router {
  const r = Router();
  r.get('/ipxe/:file', async (req, res) => {
    const name = pathParam(req, 'file');
    const opened = await openServedFile(d.ipxeDir, d.symlinkRoots, name);
    if (!opened.ok) {
      d.logger.warn({ event: 'ipxe-file.refused', file: name.slice(0, 64), client: req.ip, reason: opened.reason }, `not serving iPXE file ${name.slice(0, 64)}: ${opened.reason}`);
      res.status(404).type('text/plain').send('not found\n');
      return;
    }
    const { handle, size } = opened.file;
    res.status(200).set({ 'Content-Type': 'application/octet-stream', 'Content-Length': String(size), 'Cache-Control': 'no-cache' });
    if (req.method === 'HEAD') {
      await handle.close();
      res.end();
      return;
    }
    const stream = handle.createReadStream({ highWaterMark: 1 << 20 });
    stream.on('error', () => res.destroy());
    stream.pipe(res);
  });
  return r;
}
