import { readFileSync } from 'node:fs';
import { assetPath } from '../../common/assets.js';
import { ipxeLineProblem } from '../../common/ipxe-safe.js';

const cache = new Map<string, string>();

function load(name: string): string {
  let t = cache.get(name);
  if (t === undefined) {
    t = readFileSync(assetPath('ipxe', `${name}.ipxe`), 'utf8');
    cache.set(name, t);
  }
  return t;
}

export class TemplateError extends Error {
  override name = 'TemplateError';
}

/**
 * Fill {{name}} placeholders of an iPXE template. Values are checked, not escaped (iPXE has no
 * quoting): see ipxeLineProblem. Multi-line values are allowed only for keys ending in "Lines"
 * (built by the server itself, each line checked).
 */
export function renderTemplate(name: string, vars: Record<string, string>): string {
  return load(name).replace(/\{\{([A-Za-z]+)\}\}/g, (_, key: string) => {
    const v = vars[key];
    if (v === undefined) throw new TemplateError(`template ${name}: no value for {{${key}}}`);
    if (key.endsWith('Lines')) {
      // whole script lines the server composed from checked parts: no expansion, printable only
      if (v.includes('${') || !/^[\x20-\x7e\n]*$/.test(v)) throw new TemplateError(`template ${name}: {{${key}}} has unsafe characters`);
      return v;
    }
    const p = ipxeLineProblem(v);
    if (p) throw new TemplateError(`template ${name}: {{${key}}} ${p}`);
    return v;
  });
}
