import { fileURLToPath } from 'node:url';

/**
 * The one way to find boot-assets/ (data the OS and the scripts ship: iPXE templates, the initrd's
 * /init, build hooks, fix scripts). It sits beside common/ in the source tree and in a package.
 */
export const ASSETS_DIR = fileURLToPath(new URL('../boot-assets/', import.meta.url));

/** A path inside boot-assets/, e.g. assetPath('ipxe', 'local.ipxe'). Parts are fixed names, never input. */
export function assetPath(...parts: string[]): string {
  return ASSETS_DIR + parts.join('/');
}
