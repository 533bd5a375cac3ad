/**
 * Deploy write rate: in one booted RAM OS (lean flavour, SeaBIOS PXE in a network namespace with the
 * real server, as in test/deploy.test.ts) with a blank 1 GiB virtio disk, the deploy agent
 * (ramboot-deploy.service, a deploy by URL with its sha256, after: stay) against the same stream run
 * by hand over SSH in the same VM (`curl -sS URL | zstd -d -q | dd ... oflag=direct`, the same dd
 * options as the agent; and the same with a tee of the download into sha256sum, the one check the
 * agent must make in the stream), alternating, N runs each. The image: base64 text of random bytes, zstd -3
 * (about 3/4 of its size: the decompressor works), served by busybox httpd in the namespace.
 * The agent's write time is its `write` stage (curl start to dd's fsync), from its journal; its
 * read-back verify is reported on its own. Root only.
 *   RAMBOOT_BENCH_DEPLOY_MIB=N    raw image size in MiB (default 256)
 *   RAMBOOT_BENCH_DEPLOY_RUNS=N   runs of each (default 3)
 *   RAMBOOT_BENCH_DEPLOY_COMPARE_AGENT=FILE  the second agent (default: this checkout's), e.g. an
 *                                 older one from `git show REV:boot-assets/hooks/files/ramboot-deploy`
 *   RAMBOOT_BENCH_DEPLOY_AGENTS=checkout      only the second agent (not the image's)
 */
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { runOk } from '../common/run.js';
import { builtImage } from '../test/lib/built-image.js';
import { createNetns } from '../test/lib/netns.js';
import { startQemu, qemuOptValue } from '../test/lib/qemu.js';
import { startRambootServer } from '../test/lib/ramboot-server.js';
import { BenchScope } from './scope.js';
import { median, progress } from './lib.js';
import { copyFile, link, mkdir, readFile } from 'node:fs/promises';

const BASE = 'http://10.99.0.1:8080';
const FILES = 'http://10.99.0.1:8081';
const MAC = '52:54:00:de:b0:01';
const DISK = '/dev/disk/by-id/virtio-RBTARGET';
/** The write end of the pipes run by hand: the agent's dd options. */
const DD = `dd of=${DISK} bs=4M iflag=fullblock oflag=direct conv=fsync,notrunc status=none`;

async function makeImage(dir: string, mib: number): Promise<{ zst: string; sha256: string; rawBytes: number; zstBytes: number }> {
  const raw = join(dir, 'image.raw');
  const out = createWriteStream(raw);
  // base64 of random bytes: 4 output bytes per 3 random ones, so zstd gets it to ~76 %.
  const chunk = 3 * 1024 * 1024;
  for (let written = 0; written < mib * 1048576;) {
    const text = randomBytes(chunk).toString('base64');
    if (!out.write(text)) await once(out, 'drain');
    written += text.length;
  }
  out.end();
  await once(out, 'finish');
  await runOk('truncate', ['-s', `${mib}M`, raw]);
  const zst = join(dir, 'www', 'image.raw.zst');
  await mkdir(join(dir, 'www'));
  await runOk('zstd', ['-q', '-3', '-T0', '-o', zst, raw], { timeoutMs: 600_000 });
  const sha256 = (await runOk('sha256sum', [zst])).stdout.split(' ')[0] ?? '';
  const size = async (f: string): Promise<number> => Number((await runOk('stat', ['-c', '%s', f])).stdout.trim());
  const r = { zst, sha256, rawBytes: await size(raw), zstBytes: await size(zst) };
  await rm(raw);
  return r;
}

export async function runDeployBench(): Promise<string> {
  const mib = Math.max(16, Number(process.env['RAMBOOT_BENCH_DEPLOY_MIB'] ?? 256) || 256);
  const runs = Math.max(1, Number(process.env['RAMBOOT_BENCH_DEPLOY_RUNS'] ?? 3) || 3);
  const image = await builtImage({ flavour: 'lean' });
  const scope = new BenchScope();
  const work = await mkdtemp(join(tmpdir(), 'ramboot-bench-deploy-'));
  const manual: number[] = [];
  const manualHashed: number[] = [];
  const agent: number[] = [];
  const verify: number[] = [];
  const agentNew: number[] = [];
  const verifyNew: number[] = [];
  const loads: number[] = [];
  try {
    progress(`image: ${mib} MiB of base64 text, zstd -3`);
    const img = await makeImage(work, mib);
    const imgDir = join(work, 'data', 'images', 'default');
    await mkdir(imgDir, { recursive: true });
    for (const f of ['manifest.json', ...Object.keys(image.manifest.files)]) {
      await link(join(image.imageDir, f), join(imgDir, f)).catch(() => copyFile(join(image.imageDir, f), join(imgDir, f)));
    }
    const key = join(work, 'id');
    await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const pub = (await readFile(`${key}.pub`, 'utf8')).trim();
    const ns = await createNetns(scope, { name: 'bench-deploy', dhcp: { boot: { ipxe: `${BASE}/boot.ipxe` } } });
    const srv = await startRambootServer(scope, { dataDir: join(work, 'data'), httpHost: ns.address, httpPort: 8080, publicUrl: BASE, wrap: ns.wrap, name: 'ramboot-bench-deploy' });
    ns.spawn('httpd', ['busybox', 'httpd', '-f', '-p', '10.99.0.1:8081', '-h', join(work, 'www')]);
    await ns.waitForHttp(`${FILES}/image.raw.zst`);
    const put = await srv.api('PUT', `/api/v1/machines/${MAC}`, { hostname: 'bench-deploy', sshKeys: [pub], boot: 'ramboot' });
    if (put.status !== 201) throw new Error(`register: ${put.status} ${put.text}`);
    const disk = join(work, 'target.raw');
    await runOk('qemu-img', ['create', '-q', '-f', 'raw', disk, '1G']);
    startQemu(scope, {
      name: 'bench-deploy', firmware: 'bios', wrap: ns.wrap, memoryMiB: 1024, smp: 2,
      nics: [{ type: 'tap', ifname: ns.tap, mac: MAC, bootindex: 1 }],
      extraArgs: ['-drive', `if=none,id=d0,format=raw,file=${qemuOptValue(disk)}`, '-device', 'virtio-blk-pci,drive=d0,serial=RBTARGET'],
    });
    const ready = await srv.waitForLog((l) => l['event'] === 'phone-home.ready' && l['mac'] === MAC, 600_000);
    const ip = String(ready['ip'] ?? '');
    const ssh = (cmd: string, timeoutMs = 600_000) => ns.run(['ssh', '-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', `root@${ip}`, cmd], timeoutMs);
    await ssh('systemctl is-system-running --wait >/dev/null || true');
    const url = `${FILES}/image.raw.zst`;
    /**
     * Runs `pipe` in the VM between two reads of the guest's uptime (after `setup`): its seconds, and
     * the output of `report` run after it.
     */
    const timedInVm = async (pipe: string, setup = '', report = 'true'): Promise<{ seconds: number; out: string }> => {
      const r = await ssh(`${setup} a=$(cut -d ' ' -f 1 /proc/uptime); ${pipe} && b=$(cut -d ' ' -f 1 /proc/uptime) && echo "$a $b" && ${report}`);
      const [times = '', out = ''] = r.stdout.trim().split('\n');
      const [a = NaN, b = NaN] = times.split(' ').map(Number);
      return { seconds: b - a, out: out.trim() };
    };
    // The checkout's agent next to the image's (before/after in the same VM): installed beside it and
    // run by the same unit through a runtime drop-in, removed again for the image's agent.
    const compareFile = process.env['RAMBOOT_BENCH_DEPLOY_COMPARE_AGENT'];
    const checkout = (await readFile(compareFile ?? new URL('../boot-assets/hooks/files/ramboot-deploy', import.meta.url))).toString('base64');
    await ssh(`echo ${checkout} | base64 -d > /usr/local/lib/ramboot/ramboot-deploy.checkout && chmod 755 /usr/local/lib/ramboot/ramboot-deploy.checkout`);
    const dropIn = '/run/systemd/system/ramboot-deploy.service.d';
    const useAgent = (which: 'image' | 'checkout') => ssh(which === 'checkout'
      ? `mkdir -p ${dropIn} && printf '[Service]\\nExecStart=\\nExecStart=/usr/local/lib/ramboot/ramboot-deploy.checkout\\n' > ${dropIn}/50-bench.conf && systemctl daemon-reload`
      : `rm -f ${dropIn}/50-bench.conf && systemctl daemon-reload`);
    const agents: Array<'image' | 'checkout'> = process.env['RAMBOOT_BENCH_DEPLOY_AGENTS'] === 'checkout' ? ['checkout'] : ['image', 'checkout'];
    for (let i = 0; i < runs; i++) {
      loads.push(loadavg()[0] ?? 0);
      // by hand: the same stream, the same dd options as the agent
      const plain = await timedInVm(`curl -sS ${url} | zstd -d -q | ${DD}`);
      manual.push(plain.seconds);
      progress(`run ${i + 1}: by hand ${plain.seconds.toFixed(1)} s`);
      // by hand with the one check the agent cannot leave out: the sha256 of the download (a tee into
      // sha256sum), the least a verified stream costs on this CPU
      loads.push(loadavg()[0] ?? 0);
      const hashed = await timedInVm(`curl -sS ${url} | tee /run/bench.fifo | zstd -d -q | ${DD} && wait`,
        'rm -f /run/bench.fifo; mkfifo /run/bench.fifo; sha256sum </run/bench.fifo >/run/bench.sum &', 'cut -d " " -f 1 /run/bench.sum');
      if (hashed.out !== img.sha256) throw new Error(`by hand with sha256: the sum ${hashed.out} is not the image's ${img.sha256}`);
      manualHashed.push(hashed.seconds);
      progress(`run ${i + 1}: by hand with sha256 ${hashed.seconds.toFixed(1)} s`);
      for (const which of agents) {
        loads.push(loadavg()[0] ?? 0);
        await useAgent(which);
        await ssh(`dd if=/dev/zero of=${DISK} bs=1M count=1 oflag=direct status=none`);
        const p = await srv.api('PATCH', `/api/v1/machines/${MAC}`, { deploy: { url, sha256: img.sha256, disk: { serial: 'RBTARGET' }, after: 'stay' } });
        const id = (p.json as { deploy?: { id?: string } }).deploy?.id;
        if (!id) throw new Error(`PATCH deploy: ${p.status} ${p.text}`);
        await ssh('systemctl restart --no-block ramboot-deploy');
        const done = await srv.waitForLog((l) => (l['event'] === 'deploy.succeeded' || l['event'] === 'deploy.failed') && l['mac'] === MAC && l['id'] === id, 900_000);
        if (done['event'] !== 'deploy.succeeded') throw new Error(`deploy failed: ${JSON.stringify(done)}`);
        const journal = (await ssh("journalctl -o short-monotonic --no-pager _SYSTEMD_INVOCATION_ID=$(systemctl show -p InvocationID --value ramboot-deploy) | grep 'ramboot-deploy: stage '")).stdout;
        const stageAt = (stage: string): number => {
          const l = journal.split('\n').find((x) => x.includes(`ramboot-deploy: stage ${stage}`));
          return Number(/^\[\s*([\d.]+)\]/.exec(l ?? '')?.[1] ?? NaN);
        };
        const w = stageAt('verify') - stageAt('write');
        const v = stageAt('partition') - stageAt('verify');
        (which === 'image' ? agent : agentNew).push(w);
        (which === 'image' ? verify : verifyNew).push(v);
        progress(`run ${i + 1}: agent (${which}) write ${w.toFixed(1)} s, read-back verify ${v.toFixed(1)} s`);
      }
    }
    const rate = (s: number): string => (Number.isFinite(s) ? (img.rawBytes / 1048576 / s).toFixed(1) : '-');
    const med = (xs: number[]): number => (xs.length ? median(xs) : NaN);
    const fmt = (xs: number[]): string => xs.map((x) => x.toFixed(1)).join(', ') || '-';
    const m = med(manual);
    const ratio = (xs: number[]): string => (xs.length ? `${(m / med(xs)).toFixed(2)}x` : '-');
    const lines = [
      `Image: ${(img.rawBytes / 1048576).toFixed(0)} MiB raw (base64 text of random bytes), ${(img.zstBytes / 1048576).toFixed(0)} MiB as zstd -3, served by busybox httpd in the namespace;`,
      'lean RAM OS, QEMU TCG, 1 GiB, 2 vCPUs, SeaBIOS PXE; target: a 1 GiB raw file as virtio-blk. Runs alternate (by hand, the image\'s agent, this checkout\'s agent).',
      `Load average (1 min) at each run's start: ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}.`, '',
      '| write stream | all runs (s) | median | MiB/s (raw bytes written) | vs by hand (goal >= 0.9x) |', '|---|---|---|---|---|',
      `| by hand: \`curl -sS URL \\| zstd -d -q \\| dd of=DISK bs=4M iflag=fullblock oflag=direct conv=fsync,notrunc\` | ${fmt(manual)} | ${m.toFixed(1)} s | ${rate(m)} | 1x |`,
      `| by hand with the download's sha256: \`curl -sS URL \\| tee FIFO \\| zstd -d -q \\| dd ...\`, \`sha256sum <FIFO\` | ${fmt(manualHashed)} | ${med(manualHashed).toFixed(1)} s | ${rate(med(manualHashed))} | ${ratio(manualHashed)} |`,
      `| agent in the image (\`write\` stage: curl start to dd's fsync) | ${fmt(agent)} | ${med(agent).toFixed(1)} s | ${rate(med(agent))} | ${ratio(agent)} |`,
      `| agent ${compareFile ? `from ${compareFile}` : 'in this checkout'} | ${fmt(agentNew)} | ${med(agentNew).toFixed(1)} s | ${rate(med(agentNew))} | ${ratio(agentNew)} |`,
      `| read-back verify, image's agent (not in the ratio) | ${fmt(verify)} | ${med(verify).toFixed(1)} s | ${rate(med(verify))} | |`,
      `| read-back verify, the second agent (not in the ratio) | ${fmt(verifyNew)} | ${med(verifyNew).toFixed(1)} s | ${rate(med(verifyNew))} | |`,
    ];
    return `${lines.join('\n')}\n`;
  } finally {
    await scope.close();
    await rm(work, { recursive: true, force: true });
  }
}
