/**
 * Boot benchmark: QEMU start (TCG) -> SSH accepting the seed's key, several boots per image, images
 * interleaved so that they share the machine's load. Images: the current build of each flavour
 * (test image cache), plus an optional baseline to compare against:
 *   RAMBOOT_BENCH_BASELINE=DATA_DIR    an image built by hand, e.g. from an older commit
 *   RAMBOOT_BENCH_BOOTS=N              boots per image (default 5)
 *   RAMBOOT_BENCH_FLAVOURS=cloud,lean  which current flavours (default both)
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../test/lib/free-port.js';
import { runOk } from '../common/run.js';
import { builtImage } from '../test/lib/built-image.js';
import { bootAndSsh } from '../test/lib/ssh-boot.js';
import { seedCmdline, startSeedServer } from '../test/lib/seed-server.js';
import { manifestSchema, type ImageManifest } from '../common/manifest.js';
import { BenchScope } from './scope.js';
import { median, progress } from './lib.js';

const MAC = '52:54:00:4a:11:05';

interface Candidate { label: string; dir: string; manifest: ImageManifest; times: number[]; loads: number[]; failures: string[] }

async function bootOnce(c: Candidate, key: string, pub: string): Promise<void> {
  const scope = new BenchScope();
  try {
    const seed = await startSeedServer(scope, { hostname: 'bench', sshKey: pub });
    const load = loadavg()[0] ?? 0;
    const r = await bootAndSsh(scope, {
      name: `bench-boot-${c.label.replace(/[^a-z0-9]+/gi, '-')}`,
      kernel: join(c.dir, 'vmlinuz'), initrd: join(c.dir, 'initrd.img'),
      append: `${seedCmdline(c.manifest.cmdline, MAC, seed.port)} panic=-1`,
      memoryMiB: 512, mac: MAC, sshPort: await freePort(), key,
    });
    c.times.push(r.seconds);
    c.loads.push(load);
    progress(`${c.label}: ${r.seconds} s (load ${load.toFixed(1)})`);
  } catch (e) {
    c.failures.push((e as Error).message.split('\n')[0] ?? 'failed');
  } finally {
    await scope.close();
  }
}

async function candidate(label: string, dataDir: string): Promise<Candidate> {
  const dir = join(dataDir, 'images', 'default');
  const manifest = manifestSchema.parse(JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')));
  return { label, dir, manifest, times: [], loads: [], failures: [] };
}

export async function runBootBench(): Promise<string> {
  const boots = Math.max(1, Number(process.env['RAMBOOT_BENCH_BOOTS'] ?? 5) || 5);
  const flavours = (process.env['RAMBOOT_BENCH_FLAVOURS'] ?? 'cloud,lean').split(',').filter((f): f is 'cloud' | 'lean' => f === 'cloud' || f === 'lean');
  const cands: Candidate[] = [];
  const baseline = process.env['RAMBOOT_BENCH_BASELINE'];
  if (baseline) cands.push(await candidate(`baseline (${baseline.split('/').pop()})`, baseline));
  for (const flavour of flavours) {
    progress(`image: ${flavour} (built if not cached)`);
    const img = await builtImage({ flavour });
    cands.push(await candidate(`current ${flavour}`, img.dataDir));
  }
  const work = await mkdtemp(join(tmpdir(), 'ramboot-bench-boot-'));
  try {
    const key = join(work, 'id');
    await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const pub = (await readFile(`${key}.pub`, 'utf8')).trim();
    for (let i = 0; i < boots; i++) {
      for (const c of cands) await bootOnce(c, key, pub);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const f1 = (n: number): string => n.toFixed(1);
  const lines = [
    `${boots} boot(s) per image, interleaved; 512 MiB, 2 vCPUs, \`-machine q35,accel=tcg\`, user-mode network, seed on loopback;`,
    'time from QEMU start to `ssh root@` with the seed\'s key running `true` (polled every 250 ms). Goal (cloud flavour): <= 20 s.', '',
    '| image | median | min | max | load average (1 min) during the boots | failures |', '|---|---|---|---|---|---|',
  ];
  for (const c of cands) {
    const t = c.times;
    lines.push(`| ${c.label} | ${t.length ? `${f1(median(t))} s` : '-'} | ${t.length ? `${f1(Math.min(...t))} s` : '-'} | ${t.length ? `${f1(Math.max(...t))} s` : '-'} | ${c.loads.length ? `${f1(Math.min(...c.loads))}-${f1(Math.max(...c.loads))}` : '-'} | ${c.failures.length ? c.failures.join('; ') : 'none'} |`);
  }
  return `${lines.join('\n')}\n`;
}
