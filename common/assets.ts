import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/**
 * The one way to find boot-assets/ (data the OS and the scripts ship: iPXE templates, the initrd's
 * /init, build hooks, fix scripts, the admin page). It sits beside common/ in the source tree and in
 * a package; compiled code runs from dist/common/, so there it is one level further up.
 */
export const ASSETS_DIR = [new URL('../boot-assets/', import.meta.url), new URL('../../boot-assets/', import.meta.url)]
  .map((u) => fileURLToPath(u))
  .find((dir) => existsSync(dir)) ?? fileURLToPath(new URL('../boot-assets/', import.meta.url));

/** A path inside boot-assets/, e.g. assetPath('ipxe', 'local.ipxe'). Parts are fixed names, never input. */
export function assetPath(...parts: string[]): string {
  return ASSETS_DIR + parts.join('/');
}
