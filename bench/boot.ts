/**
 * Boot benchmark: power-on -> SSH with a verified host key, by PXE, per firmware (SeaBIOS + iPXE ROM;
 * OVMF's own PXE -> snponly.efi -> iPXE), each boot in its own network namespace with the real server
 * (bench/boot-pxe.ts), images and firmware interleaved so they share the machine's load. Root only.
 *   RAMBOOT_BENCH_BASELINE=LABEL=DATA_DIR[,LABEL=DATA_DIR]  earlier images to compare (e.g. built from
 *                                    an older commit with `ramboot build --data-dir DATA_DIR`)
 *   RAMBOOT_BENCH_BOOTS=N            boots per image and firmware (default 2)
 *   RAMBOOT_BENCH_FLAVOURS=cloud,lean  current flavours (default both; RAMBOOT_TEST_IMAGE_DATA_DIR /
 *                                    RAMBOOT_TEST_LEAN_IMAGE_DATA_DIR point at prebuilt ones)
 *   RAMBOOT_BENCH_FIRMWARE=bios,uefi firmware (default both)
 *   RAMBOOT_BENCH_KERNEL_ARGS="..."  also boot each current flavour with these kernel arguments
 * Writes each boot's systemd-analyze output to bench/out/boot-<label>-<firmware>-<n>.txt.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { builtImage } from '../test/lib/built-image.js';
import { BenchScope } from './scope.js';
import { median, progress } from './lib.js';
import { measurePxeBoot, type Firmware, type PxeBootTimes } from './boot-pxe.js';

interface Candidate { label: string; imageDir: string; kernelArgs?: string }
interface Row { c: Candidate; fw: Firmware; runs: PxeBootTimes[]; loads: number[]; failures: string[] }

const GOAL: Record<Firmware, number> = { bios: 20, uefi: 25 };
const OUT = new URL('./out/', import.meta.url).pathname;

async function candidates(): Promise<Candidate[]> {
  const cands: Candidate[] = [];
  for (const part of (process.env['RAMBOOT_BENCH_BASELINE'] ?? '').split(',').filter(Boolean)) {
    const [label = '', dir = ''] = part.split('=');
    if (!label || !dir) throw new Error(`RAMBOOT_BENCH_BASELINE: want LABEL=DATA_DIR, got "${part}"`);
    cands.push({ label, imageDir: join(dir, 'images', 'default') });
  }
  const flavours = (process.env['RAMBOOT_BENCH_FLAVOURS'] ?? 'cloud,lean').split(',').filter((f): f is 'cloud' | 'lean' => f === 'cloud' || f === 'lean');
  for (const flavour of flavours) {
    progress(`image: ${flavour} (built if not cached)`);
    const img = await builtImage({ flavour });
    cands.push({ label: `current ${flavour}`, imageDir: img.imageDir });
    // The same image with extra kernel arguments (the machine's kernelArgs), e.g. to measure a flag.
    const extra = process.env['RAMBOOT_BENCH_KERNEL_ARGS'];
    if (extra) cands.push({ label: `current ${flavour} + ${extra}`, imageDir: img.imageDir, kernelArgs: extra });
  }
  return cands;
}

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '-');
const med = (xs: number[]): number => {
  const ok = xs.filter(Number.isFinite);
  return ok.length ? median(ok) : NaN;
};

export async function runBootBench(): Promise<string> {
  const boots = Math.max(1, Number(process.env['RAMBOOT_BENCH_BOOTS'] ?? 2) || 2);
  const firmwares = (process.env['RAMBOOT_BENCH_FIRMWARE'] ?? 'bios,uefi').split(',').filter((f): f is Firmware => f === 'bios' || f === 'uefi');
  const rows: Row[] = [];
  for (const c of await candidates()) for (const fw of firmwares) rows.push({ c, fw, runs: [], loads: [], failures: [] });
  await mkdir(OUT, { recursive: true });
  const loadsAll: number[] = [];
  for (let i = 0; i < boots; i++) {
    for (const [k, row] of rows.entries()) {
      const scope = new BenchScope();
      const work = await mkdtemp(join(tmpdir(), 'ramboot-bench-boot-'));
      const load = loadavg()[0] ?? 0;
      loadsAll.push(load);
      const slug = `${row.c.label.replace(/[^a-z0-9]+/gi, '-')}-${row.fw}-${i + 1}`;
      try {
        const r = await measurePxeBoot(scope, {
          name: `bb${k}-${i}`, imageDir: row.c.imageDir, work, firmware: row.fw,
          mac: `52:54:00:b0:0${k % 10}:${(10 + i).toString(16).padStart(2, '0')}`, memoryMiB: 1024,
          kernelArgs: row.c.kernelArgs,
        });
        row.runs.push(r.times);
        row.loads.push(load);
        await writeFile(join(OUT, `boot-${slug}.txt`), `${JSON.stringify(r.times)}\nload ${load.toFixed(2)}\n${r.analysis}\n`);
        progress(`${row.c.label} ${row.fw}: verified SSH ${r.times.verifiedSsh} s (load ${load.toFixed(1)}) ${JSON.stringify(r.times)}`);
      } catch (e) {
        row.failures.push((e as Error).message.split('\n')[0] ?? 'failed');
        progress(`${row.c.label} ${row.fw}: FAILED ${(e as Error).message.slice(0, 400)}`);
      } finally {
        await scope.close();
        await rm(work, { recursive: true, force: true });
      }
    }
  }
  const keys: Array<[keyof PxeBootTimes, string]> = [
    ['script', 'script'], ['imageFetch', 'image fetched'], ['kernel', 'kernel'], ['initStart', '/init'],
    ['initEnd', '/init done'], ['systemd', 'systemd'], ['sshd', 'sshd up'], ['hostKeys', 'host keys reported'],
    ['verifiedSsh', '**verified SSH**'],
  ];
  const lines = [
    `${boots} boot(s) per image and firmware, interleaved; QEMU TCG (\`-machine q35,accel=tcg\`), 1 GiB, 2 vCPUs, PXE in a network`,
    'namespace (dnsmasq as the site DHCP, the real server), OVMF without PXEv6. Seconds from QEMU start (power-on), medians;',
    '"verified SSH" = `ssh -o StrictHostKeyChecking=yes -o UserKnownHostsFile=<GET /api/v1/machines/MAC/known_hosts>` succeeded.',
    `Load average (1 min) at each boot's start: ${f1(Math.min(...loadsAll))}-${f1(Math.max(...loadsAll))}.`, '',
    `| image | firmware | ${keys.map(([, h]) => h).join(' | ')} | all verified SSH | goal | failures |`,
    `|---|---|${keys.map(() => '---|').join('')}---|---|---|`,
  ];
  for (const r of rows) {
    const v = med(r.runs.map((x) => x.verifiedSsh));
    const goal = `<= ${GOAL[r.fw]} s: ${Number.isFinite(v) ? (v <= GOAL[r.fw] ? 'met' : '**not met**') : '-'}`;
    lines.push(`| ${r.c.label} | ${r.fw} | ${keys.map(([k]) => f1(med(r.runs.map((x) => x[k])))).join(' | ')} | ${r.runs.map((x) => f1(x.verifiedSsh)).join(', ') || '-'} | ${goal} | ${r.failures.length ? r.failures.join('; ') : 'none'} |`);
  }
  return `${lines.join('\n')}\n`;
}
