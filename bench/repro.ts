/**
 * Reproducibility from scratch: two `ramboot build` runs, each with its own empty cache (two
 * downloads, two mmdebstrap runs), the same inputs and SOURCE_DATE_EPOCH; compares every output file
 * and, when the initrds differ, names the files of the root that differ. Slow (two cold builds):
 * not a CI test; `npm run bench -- repro`. RAMBOOT_BENCH_FLAVOUR=lean for the lean flavour.
 */
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { closeSync, createReadStream, openSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CACHE_DIR } from '../test/lib/paths.js';
import { runOk } from '../common/run.js';
import { runBuild, TEST_EPOCH } from '../test/lib/built-image.js';
import { manifestSchema } from '../common/manifest.js';
import { progress } from './lib.js';

async function sha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Paths whose content or metadata differ between the two roots (unsquashfs -lls listings + cmp). */
async function rootDiff(dirA: string, dirB: string, work: string): Promise<string[]> {
  const out: string[] = [];
  for (const [name, dir] of [['a', dirA], ['b', dirB]] as const) {
    const x = join(work, name);
    await mkdir(x, { recursive: true });
    const fd = openSync(join(dir, 'initrd.img'), 'r');
    try {
      const c = spawnSync('cpio', ['-id', '--quiet', 'root.squashfs'], { cwd: x, stdio: [fd, 'ignore', 'pipe'] });
      if (c.status !== 0) throw new Error(`cpio: ${String(c.stderr)}`);
    } finally {
      closeSync(fd);
    }
    await runOk('unsquashfs', ['-q', '-n', '-d', join(x, 'root'), join(x, 'root.squashfs')]);
  }
  // diff exits 1 when the trees differ: that is the answer, not an error.
  const r = spawnSync('diff', ['-rq', '--no-dereference', join(work, 'a', 'root'), join(work, 'b', 'root')], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0 && r.status !== 1) throw new Error(`diff: ${r.stderr}`);
  for (const l of r.stdout.split('\n')) if (l.trim()) out.push(l.replaceAll(join(work, 'a', 'root'), '').replaceAll(join(work, 'b', 'root'), ''));
  return out;
}

export async function runReproBench(): Promise<string> {
  const flavour = process.env['RAMBOOT_BENCH_FLAVOUR'] === 'lean' ? 'lean' : 'cloud';
  const base = join(CACHE_DIR, 'bench-repro', flavour);
  await rm(base, { recursive: true, force: true });
  const dirs: string[] = [];
  const seconds: number[] = [];
  for (const n of ['a', 'b']) {
    const dataDir = join(base, n);
    await mkdir(dataDir, { recursive: true });
    progress(`cold build ${n} (${flavour}, empty cache)`);
    const started = Date.now();
    await runBuild(['--data-dir', dataDir, '--flavour', flavour], { ...process.env, SOURCE_DATE_EPOCH: TEST_EPOCH }, (l) => {
      const m = /"event":"(build\.(?:step|done))".*?"step":"([^"]{0,60})/.exec(l);
      if (m) progress(`build ${n}: ${m[2]}`);
    });
    seconds.push(Math.round((Date.now() - started) / 1000));
    dirs.push(join(dataDir, 'images', 'default'));
  }
  const [a, b] = dirs as [string, string];
  const ma = manifestSchema.parse(JSON.parse(await readFile(join(a, 'manifest.json'), 'utf8')));
  const lines = [`Flavour \`${flavour}\`, SOURCE_DATE_EPOCH=${TEST_EPOCH}, two builds from empty caches (downloads and mmdebstrap twice): ${seconds[0]} s and ${seconds[1]} s.`, '',
    '| file | build a | build b | |', '|---|---|---|---|'];
  let initrdSame = true;
  for (const f of [...Object.keys(ma.files), 'manifest.json']) {
    const [ha, hb] = [await sha256(join(a, f)), await sha256(join(b, f))];
    if (f === 'initrd.img' && ha !== hb) initrdSame = false;
    lines.push(`| ${f} | ${ha.slice(0, 16)}... | ${hb.slice(0, 16)}... | ${ha === hb ? 'identical' : 'DIFFERENT'} |`);
  }
  if (!initrdSame) {
    const diff = await rootDiff(a, b, join(base, 'diff'));
    lines.push('', `Root trees differ in ${diff.length} place(s):`, '', ...diff.slice(0, 40).map((d) => `- \`${d}\``));
  }
  await rm(base, { recursive: true, force: true });
  return `${lines.join('\n')}\n`;
}
