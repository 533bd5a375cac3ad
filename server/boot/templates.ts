import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const ASSETS_DIR = fileURLToPath(new URL('../../boot-assets/', import.meta.url));

const cache = new Map<string, string>();

function load(name: string): string {
  let t = cache.get(name);
  if (t === undefined) {
    t = readFileSync(`${ASSETS_DIR}ipxe/${name}.ipxe`, 'utf8');
    cache.set(name, t);
  }
  return t;
}

export class TemplateError extends Error {
  override name = 'TemplateError';
}

/**
 * Fill {{name}} placeholders of an iPXE template. Values are checked, not escaped: iPXE has no
 * quoting, so a value must not contain a newline (a new command) or "${" (setting expansion).
 * Multi-line values are allowed only for keys ending in "Lines" (built by the server itself).
 */
export function renderTemplate(name: string, vars: Record<string, string>): string {
  return load(name).replace(/\{\{([A-Za-z]+)\}\}/g, (_, key: string) => {
    const v = vars[key];
    if (v === undefined) throw new TemplateError(`template ${name}: no value for {{${key}}}`);
    if (!key.endsWith('Lines') && /[\r\n]/.test(v)) throw new TemplateError(`template ${name}: {{${key}}} contains a newline`);
    if (v.includes('${')) throw new TemplateError(`template ${name}: {{${key}}} contains "\${"`);
    return v;
  });
}
