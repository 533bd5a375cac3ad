/**
 * Build benchmark: `ramboot build` time (warm; cold with RAMBOOT_BENCH_COLD=1), image sizes, time
 * from QEMU start (TCG) to SSH accepting the seed's key, and the RAM floor. Returns markdown.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CACHE_DIR } from '../test/lib/paths.js';
import { freePort } from '../test/lib/free-port.js';
import { runOk } from '../common/run.js';
import { startQemu } from '../test/lib/qemu.js';
import { runBuild, TEST_EPOCH } from '../test/lib/built-image.js';
import { bootAndSsh } from '../test/lib/ssh-boot.js';
import { seedCmdline, startSeedServer } from '../test/lib/seed-server.js';
import { manifestSchema, type ImageManifest } from '../common/manifest.js';
import { progress } from './lib.js';
import { BenchScope } from './scope.js';

const MAC = '52:54:00:4a:11:02';

async function timedBuild(dataDir: string, sharedCache: string | null, flavour: string): Promise<{ seconds: number; rootCached: boolean }> {
  await mkdir(dataDir, { recursive: true });
  if (sharedCache && !existsSync(join(dataDir, 'cache'))) {
    await mkdir(sharedCache, { recursive: true });
    await symlink(sharedCache, join(dataDir, 'cache'));
  }
  let rootCached = false;
  const started = Date.now();
  await runBuild(['--data-dir', dataDir, '--flavour', flavour], { ...process.env, SOURCE_DATE_EPOCH: TEST_EPOCH }, (l) => {
    if (l.includes('root restored from cache')) rootCached = true;
    const m = /"event":"(build\.(?:step|done|mmdebstrap\.step))".*?"step":"([^"]{0,60})/.exec(l);
    if (m) progress(`build: ${m[2]}`);
  });
  return { seconds: Math.round((Date.now() - started) / 1000), rootCached };
}

interface BootResult { ramMiB: number; ok: boolean; seconds?: number; note: string }

async function bootOnce(image: string, m: ImageManifest, ramMiB: number, work: string): Promise<BootResult> {
  const scope = new BenchScope();
  try {
    const key = join(work, `id-${ramMiB}`);
    await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const pub = (await readFile(`${key}.pub`, 'utf8')).trim();
    const seed = await startSeedServer(scope, { hostname: 'bench', sshKey: pub });
    const cmdline = `${seedCmdline(m.cmdline, MAC, seed.port)} panic=-1`;
    if (ramMiB < m.minRamMiB) { // between the unpack need (~2 x squashfs + 80) and the floor: /init must refuse
      const vm = startQemu(scope, {
        name: `bench-lowram-${ramMiB}`, memoryMiB: ramMiB, kernel: join(image, 'vmlinuz'),
        initrd: join(image, 'initrd.img'), append: cmdline, failOn: null,
      });
      const hit = await vm.waitFor(/RAMBOOT-FATAL: (.*)|starting systemd|(Kernel panic.*)/, { timeoutMs: 300_000 });
      const note = hit[1] ? `refused by /init: "${hit[1].slice(0, 90)}..."`
        : hit[2] ? `kernel panic before /init: ${hit[2].slice(0, 80)}` : 'started the OS (check not enforced!)';
      return { ramMiB, ok: false, note };
    }
    const r = await bootAndSsh(scope, {
      name: `bench-boot-${ramMiB}`, kernel: join(image, 'vmlinuz'), initrd: join(image, 'initrd.img'),
      append: cmdline, memoryMiB: ramMiB, mac: MAC, sshPort: await freePort(), key,
    });
    return { ramMiB, ok: true, seconds: r.seconds, note: 'SSH accepted the seed key' };
  } catch (e) {
    return { ramMiB, ok: false, note: `failed: ${(e as Error).message.split('\n')[0]?.slice(0, 120)}` };
  } finally {
    await scope.close();
  }
}

export async function runBuildBench(): Promise<string> {
  const flavour = process.env['RAMBOOT_BENCH_FLAVOUR'] === 'lean' ? 'lean' : 'cloud';
  const sharedCache = join(CACHE_DIR, 'build-apt-cache');
  const dataDir = join(CACHE_DIR, 'bench-build', flavour);
  const lines: string[] = [];
  let cold: { seconds: number } | undefined;
  if (process.env['RAMBOOT_BENCH_COLD'] === '1') {
    const coldDir = join(CACHE_DIR, 'bench-build', `${flavour}-cold`);
    await rm(coldDir, { recursive: true, force: true });
    progress('cold build (empty cache: downloads, mmdebstrap, kernel, hooks, initrd)');
    cold = await timedBuild(coldDir, null, flavour);
    await rm(coldDir, { recursive: true, force: true });
  }
  progress('build with the shared cache (first may be cold)');
  const first = await timedBuild(dataDir, sharedCache, flavour);
  const manifestFile = join(dataDir, 'images', 'default', 'manifest.json');
  const firstSha = manifestSchema.parse(JSON.parse(await readFile(manifestFile, 'utf8'))).files['initrd.img']?.sha256;
  progress('rebuild, warm');
  const warm = await timedBuild(dataDir, sharedCache, flavour);
  const image = join(dataDir, 'images', 'default');
  const m = manifestSchema.parse(JSON.parse(await readFile(join(image, 'manifest.json'), 'utf8')));
  const mb = (n: number): string => (n / 1e6).toFixed(1);
  const total = Object.values(m.files).reduce((a, f) => a + f.size, 0);

  const work = await mkdtemp(join(tmpdir(), 'ramboot-bench-build-'));
  const boots: BootResult[] = [];
  try {
    for (const ram of [1024, m.minRamMiB, m.minRamMiB - 16]) {
      progress(`boot at ${ram} MiB`);
      boots.push(await bootOnce(image, m, ram, work));
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }

  lines.push(`Flavour \`${flavour}\`, suite ${String(m.build['suite'])}, kernel ${m.kernelVersion}, design \`${String(m.build['design'])}\` (root as a squashfs inside the initrd, tmpfs overlay).`, '');
  lines.push('| what | value | goal |', '|---|---|---|');
  lines.push(`| vmlinuz | ${mb(m.files['vmlinuz']?.size ?? 0)} MB | |`);
  lines.push(`| initrd.img (root squashfs inside) | ${mb(m.files['initrd.img']?.size ?? 0)} MB | |`);
  lines.push(`| all files the loader fetches | ${mb(total)} MB | <= 150 MB |`);
  lines.push(`| root tree unpacked | ${Math.round(Number(m.build['rootBytes']) / 1048576)} MiB | |`);
  lines.push(`| minRamMiB (manifest, enforced by /init) | ${m.minRamMiB} MiB | <= 384 MiB |`);
  if (cold) lines.push(`| build, cold (empty cache) | ${cold.seconds} s | |`);
  lines.push(`| build, first with shared cache | ${first.seconds} s${first.rootCached ? ' (root from cache)' : ''} | |`);
  lines.push(`| build, warm rebuild | ${warm.seconds} s${warm.rootCached ? ' (root from cache)' : ''} | fast |`);
  const same = firstSha === m.files['initrd.img']?.sha256;
  lines.push(`| initrd of the two builds (same SOURCE_DATE_EPOCH) | ${same ? 'byte-identical' : 'DIFFERENT'} (${m.files['initrd.img']?.sha256.slice(0, 16)}...) | identical |`);
  for (const b of boots) {
    lines.push(`| boot at ${b.ramMiB} MiB: QEMU start -> SSH | ${b.seconds !== undefined ? `${b.seconds} s` : '-'} (${b.note}) | <= 20 s under TCG |`);
  }
  lines.push('', 'TCG (`-machine q35,accel=tcg`, 2 vCPUs), user-mode networking, seed served on loopback. The machine is shared:',
    'other engineers\' QEMU and builds run at the same time, so boot times vary a lot between runs.', '');
  return `${lines.join('\n')}\n`;
}
