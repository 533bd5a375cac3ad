#!/usr/bin/env node
// Launcher. Runs the compiled JavaScript in dist/ (`npm run build`) when it is there and at least as
// new as every TypeScript source beside it; otherwise registers the TypeScript loader and runs the
// CLI from source. So a checkout being edited never runs a stale build by accident, and an install
// that ships only dist/ (or was built after its last edit) starts without compiling anything.
// RAMBOOT_FROM_SOURCE=1 forces the source. The systemd unit runs dist/cli/main.js directly.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const compiled = new URL('../dist/cli/main.js', import.meta.url);

/** Newest modification time of the .ts files under the shipped rooms (0 when there are none). */
function newestSource() {
  let newest = 0;
  const walk = (dir) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
    }
  };
  for (const room of ['common', 'cli', 'server', 'builder']) walk(`${root}${room}`);
  return newest;
}

const builtAt = existsSync(compiled) ? statSync(compiled).mtimeMs : -1;
if (process.env.RAMBOOT_FROM_SOURCE !== '1' && builtAt >= 0 && builtAt >= newestSource()) {
  await import(compiled.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../cli/main.ts');
}
