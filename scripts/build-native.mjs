#!/usr/bin/env node
// Builds native/build/sendfile.node (the sendfile(2) path for large HTTP files, server/http/file-sender.ts)
// with the C compiler and Node's own headers (<node prefix>/include/node: no download, no node-gyp).
// Never fails the install: without a compiler or headers ramboot streams through JS (slower, same bytes).
// Run by `npm ci`/`npm install` (postinstall) and `npm run build`.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'native', 'sendfile.c');
const outDir = join(root, 'native', 'build');
const out = join(outDir, 'sendfile.node');
const include = [join(dirname(process.execPath), '..', 'include', 'node'), '/usr/include/node', '/usr/local/include/node'].find((d) => existsSync(join(d, 'node_api.h')));

function skip(why) {
  process.stderr.write(`build-native: ${why}; large files will stream through JS instead of sendfile(2)\n`);
  process.exit(0);
}

if (process.platform !== 'linux') skip(`sendfile path is Linux-only (this is ${process.platform})`);
if (!include) skip('Node headers (node_api.h) not found next to the node binary');
const cc = process.env.CC || 'cc';
mkdirSync(outDir, { recursive: true });
const tmp = `${out}.tmp-${process.pid}`;
const r = spawnSync(cc, ['-O2', '-Wall', '-Wextra', '-Werror', '-fPIC', '-shared', '-std=gnu11', '-I', include, src, '-o', tmp], { stdio: 'inherit' });
if (r.error) skip(`${cc} not found (${r.error.code ?? r.error.message}; apt-get install build-essential)`);
if (r.status !== 0) skip(`${cc} failed (exit ${r.status})`);
renameSync(tmp, out);
process.stderr.write(`build-native: built ${out}\n`);
