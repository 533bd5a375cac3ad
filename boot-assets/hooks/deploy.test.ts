// The deploy agent (files/ramboot-deploy) and its hook (65-deploy), run for real on this host:
// its functions sourced with RAMBOOT_DEPLOY_LIB=1 (JSON parsing, disk selection against lsblk
// fixtures, format detection against real compressed bytes), and whole deploys against an HTTP
// server on 127.0.0.1 that plays the ramboot server, with a plain file standing for the disk.
import t from 'tap';
import { listenLocal, sendRange } from '../../test/lib/listen.js';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hooksDir } from '../../builder/hooks.js';
import { findExecutable, missingRequirements, reportMissing } from '../../test/lib/requirements.js';
import { makeTree, read, snapshot } from '../../test/lib/test-tree.js';
import { tempDir } from '../../test/lib/temp-dir.js';

const HOOKS = hooksDir();
const AGENT = join(HOOKS, 'files', 'ramboot-deploy');
const PATH = `${process.env['PATH'] ?? '/usr/bin:/bin'}:/usr/sbin:/sbin`;
const MiB = 1024 * 1024;

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Host tools these tests need (skipped loudly without them; a failure under CI=true). */
function need(t: Parameters<typeof reportMissing>[0], tools: readonly string[]): boolean {
  return reportMissing(
    t,
    tools.filter((x) => findExecutable(x) === undefined).map((x) => `${x} not found on PATH (scripts/setup-system.sh installs it)`),
  );
}

/** Runs shell code with the agent's functions defined (RAMBOOT_DEPLOY_LIB=1). */
function lib(code: string, env: Record<string, string> = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('sh', ['-c', `RAMBOOT_DEPLOY_LIB=1 . "$0" || exit 99\n${code}`, AGENT], {
    encoding: 'utf8',
    env: { PATH, ...env },
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

// ------------------------------------------------------------------------------------------------
t.test('65-deploy installs the agent, its unit and the enable link; a second run changes nothing', async (t) => {
  const root = tempDir(t, 'deploy-hook');
  makeTree(root, { 'etc/systemd/system': { dir: true }, 'usr/bin/curl': '', lib: { link: 'usr/lib' } });
  const run = () => spawnSync(join(HOOKS, '65-deploy'), [root], { encoding: 'utf8', env: { PATH } });
  const r = run();
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /note: not in the image: .*sha256sum/, 'names the tools the image lacks');
  for (const f of ['ramboot-deploy', 'ramboot-seed-url']) {
    t.equal(statSync(join(root, 'usr/local/lib/ramboot', f)).mode & 0o777, 0o755, f);
    t.equal(read(root, `usr/local/lib/ramboot/${f}`), readFileSync(join(HOOKS, 'files', f), 'utf8'));
  }
  t.equal(readlinkSync(join(root, 'usr/local/sbin/ramboot-deploy')), '../lib/ramboot/ramboot-deploy');
  const unit = read(root, 'etc/systemd/system/ramboot-deploy.service');
  t.match(unit, /^Type=exec$/m, 'never blocks the boot');
  t.match(unit, /^After=network-online\.target ssh\.service ramboot-nocloud\.service ramboot-nocloud-phone-home\.service$/m, 'once sshd is up, the seed was read and (lean) the machine phoned home');
  t.match(unit, /^ExecStart=\/usr\/local\/lib\/ramboot\/ramboot-deploy$/m);
  t.match(unit, /^CPUWeight=100$/m, 'normal CPU weight');
  t.notMatch(unit, /^Restart=/m, 'a failed deploy is not retried by itself: the machine waits for the admin');
  t.notMatch(unit, /^Before=(?!shutdown\.target$)/m, 'nothing waits for it');
  t.equal(
    readlinkSync(join(root, 'etc/systemd/system/multi-user.target.wants/ramboot-deploy.service')),
    '/etc/systemd/system/ramboot-deploy.service',
  );
  const before = snapshot(root);
  t.equal(run().status, 0);
  t.same(snapshot(root), before, 'idempotent');
  t.equal(spawnSync(join(HOOKS, '65-deploy'), ['relative'], { env: { PATH } }).status, 1, 'a bad root is refused');
});

// ------------------------------------------------------------------------------------------------
t.test('the deploy JSON: parsed by awk, validated, never evaluated', async (t) => {
  const dir = tempDir(t, 'deploy-json');
  const parse = (doc: unknown) => {
    const f = join(dir, 'd.json');
    writeFileSync(f, typeof doc === 'string' ? doc : JSON.stringify(doc));
    return lib(
      `if why=$(parse_deploy "$1"); then parse_deploy "$1"; printf '%s|' "$D_ID" "$D_URL" "$D_SHA" "$D_SIZE" "$D_FORMAT" "$D_DISK" "$D_SERIAL" "$D_MODEL" "$D_MINGIB" "$D_AFTER" "$D_GROW"; else printf 'BAD %s' "$why"; parse_deploy "$1" >/dev/null; printf ' [%s]' "$PARSE_STAGE"; fi`.replace(/\$1/g, f),
    ).stdout;
  };
  const sha = 'AB'.repeat(32);
  const good = { id: 'dep-1', source: { url: 'http://10.0.0.1/seed/artifacts/x.img', sha256: sha, size: 42, format: 'zstd' }, disk: 'auto', after: 'reboot', grow: true, future: { x: [1, 2] } };
  t.equal(parse(good), `dep-1|http://10.0.0.1/seed/artifacts/x.img|${'ab'.repeat(32)}|42|zstd|auto||||reboot|true|`, 'fields; sha256 lower-cased; unknown fields ignored');
  t.equal(
    parse({ ...good, source: { url: 'https://h/a', sha256: null, size: null, format: null }, disk: { serial: 'S 1"$(x)', model: 'QEMU HARDDISK', minSizeGiB: 1.5 }, after: 'stay', grow: false }),
    'dep-1|https://h/a||||match|S 1"$(x)|QEMU HARDDISK|1.5|stay|false|',
    'nulls; the object selector; odd characters kept as data',
  );
  t.equal(parse({ ...good, disk: '/dev/disk/by-id/virtio-abc' }).split('|')[5], '/dev/disk/by-id/virtio-abc');
  t.equal(parse({ ...good, disk: '/dev/disk/by-path/pci-0000:00:04.0' }).split('|')[5], '/dev/disk/by-path/pci-0000:00:04.0');
  t.equal(parse(JSON.stringify(good).replace('"dep-1"', '"d\\u0065p-1"')).split('|')[0], 'dep-1', '\\u escapes decoded');
  const bad: [unknown, RegExp][] = [
    ['{"id":"x",', /BAD malformed JSON/],
    ['[1]', /BAD the deploy is not a JSON object/],
    [{ ...good, id: 'a;b' }, /BAD bad or missing id/],
    [{ ...good, id: undefined }, /BAD bad or missing id/],
    [{ ...good, after: 'halt' }, /BAD after must be/],
    [{ ...good, disk: '/dev/sda' }, /BAD disk must be "auto"/],
    [{ ...good, disk: '/dev/disk/by-id/../../sda' }, /BAD disk path must be normalised/],
    [{ ...good, disk: '/dev/disk/by-id/x/y' }, /BAD disk path must name a link/],
    [{ ...good, disk: 7 }, /BAD unexpected value for 'disk'/],
    [{ ...good, disk: { minSizeGiB: -1 } }, /BAD minSizeGiB must not be negative/],
    [{ ...good, source: { ...good.source, url: 'file:///etc/shadow' } }, /BAD source.url must be an absolute http\(s\) URL.*\[fetch\]/],
    [{ ...good, source: { ...good.source, url: 'http://h/a b' } }, /BAD source.url contains spaces/],
    [{ ...good, source: { ...good.source, sha256: 'abc' } }, /BAD source.sha256 must have 64 hex digits/],
    [{ ...good, source: { ...good.source, format: 'tar' } }, /BAD source.format must be/],
    [{ ...good, grow: 'yes' }, /BAD unexpected value for 'grow'/],
  ];
  for (const [doc, re] of bad) t.match(parse(doc), re, JSON.stringify(doc).slice(0, 80));
});

// ------------------------------------------------------------------------------------------------
const SDA = 'NAME="sda" TYPE="disk" SIZE="500107862016" RM="0" RO="0" MODEL="Samsung SSD 860" SERIAL="S3Z1NB0K" TRAN="sata"';
const NVME = 'NAME="nvme0n1" TYPE="disk" SIZE="1000204886016" RM="0" RO="0" MODEL="WDC\\x20PC SN730" SERIAL="2045AB" TRAN="nvme"';
const NOISE = [
  'NAME="loop0" TYPE="loop" SIZE="104857600" RM="0" RO="1" MODEL="" SERIAL="" TRAN=""',
  'NAME="sr0" TYPE="rom" SIZE="1073741312" RM="1" RO="0" MODEL="QEMU DVD-ROM" SERIAL="QM00003" TRAN="sata"',
  'NAME="zram0" TYPE="disk" SIZE="0" RM="0" RO="0" MODEL="" SERIAL="" TRAN=""',
  'NAME="sdb" TYPE="disk" SIZE="16013942784" RM="1" RO="0" MODEL="USB Stick" SERIAL="U1" TRAN="usb"',
  'NAME="mmcblk0boot0" TYPE="disk" SIZE="4194304" RM="0" RO="1" MODEL="" SERIAL="" TRAN=""',
];

t.test('disk selection against lsblk -P fixtures', async (t) => {
  const dir = tempDir(t, 'deploy-disks');
  const select = (lines: string[], disk: string, extra: Record<string, string> = {}) => {
    const f = join(dir, 'lsblk');
    writeFileSync(f, `${lines.join('\n')}\n`);
    const r = lib(
      `D_DISK=$1 D_SERIAL=\${S-} D_MODEL=\${M-} D_MINGIB=\${G-}; if why=$(select_disk); then select_disk; printf '%s %s %s' "$DISK" "$DISK_NAME" "$DISK_SIZE"; else printf 'FAIL %s' "$why"; fi`.replace('$1', JSON.stringify(disk)),
      { RAMBOOT_DEPLOY_LSBLK: f, RAMBOOT_DEPLOY_ROOT: join(dir, 'root'), ...extra },
    );
    return r.stdout.trim();
  };
  const root = join(dir, 'root');
  t.equal(select([...NOISE, SDA], 'auto'), `${root}/dev/sda sda 500107862016`, 'auto: the only fixed disk (loop, rom, zram, removable, eMMC boot ignored)');
  t.equal(select([...NOISE], 'auto'), 'FAIL disk "auto": no local disk found (removable, read-only, loop, RAM and optical devices are never picked)');
  const two = select([SDA, ...NOISE, NVME], 'auto');
  t.match(two, /^FAIL disk "auto": 2 disks, pick one/);
  t.match(two, /\/dev\/sda \(465\.8 GiB, model "Samsung SSD 860", serial "S3Z1NB0K", sata\)/, 'candidates listed with size, model, serial');
  t.match(two, /\/dev\/nvme0n1 \(931\.5 GiB, model "WDC PC SN730", serial "2045AB", nvme\)/, 'lsblk \\x escapes decoded');
  t.equal(select([SDA, NVME], 'match', { S: '2045AB' }), `${root}/dev/nvme0n1 nvme0n1 1000204886016`, 'by serial');
  t.equal(select([SDA, NVME], 'match', { M: 'Samsung SSD 860' }), `${root}/dev/sda sda 500107862016`, 'by model');
  t.equal(select([SDA, NVME], 'match', { G: '600' }), `${root}/dev/nvme0n1 nvme0n1 1000204886016`, 'by minimum size');
  t.match(select([SDA, NVME], 'match', { G: '0.5' }), /^FAIL disk \{serial "", model "", minSizeGiB 0\.5\}: 2 matching disks; local disks: \/dev\/sda/);
  t.match(select([SDA, NVME], 'match', { S: 'nope' }), /^FAIL .*: 0 matching disks/);
  t.match(select([SDA, ...NOISE], 'match', { S: 'U1' }), /0 matching disks/, 'a removable disk is not picked by a selector');

  mkdirSync(join(root, 'dev/disk/by-id'), { recursive: true });
  mkdirSync(join(root, 'dev/disk/by-path'), { recursive: true });
  for (const n of ['sda', 'sda1', 'sdb', 'nvme0n1']) writeFileSync(join(root, 'dev', n), '');
  symlinkSync('../../nvme0n1', join(root, 'dev/disk/by-id/nvme-WDC_2045AB'));
  symlinkSync('../../sda1', join(root, 'dev/disk/by-id/ata-Samsung-part1'));
  symlinkSync('../../sdb', join(root, 'dev/disk/by-path/pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0'));
  symlinkSync('../../sr0', join(root, 'dev/disk/by-id/ata-QEMU_DVD-ROM'));
  writeFileSync(join(root, 'dev', 'sr0'), '');
  const all = [SDA, NVME, ...NOISE];
  t.equal(select(all, '/dev/disk/by-id/nvme-WDC_2045AB'), `${root}/dev/nvme0n1 nvme0n1 1000204886016`, 'by-id');
  t.equal(select(all, '/dev/disk/by-path/pci-0000:00:14.0-usb-0:1:1.0-scsi-0:0:0:0'), `${root}/dev/sdb sdb 16013942784`, 'by-path: an explicitly named removable disk is allowed');
  t.match(select(all, '/dev/disk/by-id/missing'), /^FAIL disk \/dev\/disk\/by-id\/missing does not exist; local disks: \/dev\/sda/);
  t.match(select(all, '/dev/disk/by-id/ata-Samsung-part1'), /^FAIL .* is \/dev\/sda1, which is not a whole disk/);
  t.match(select(all, '/dev/disk/by-id/ata-QEMU_DVD-ROM'), /^FAIL .*is not a writable whole disk/);
});

// ------------------------------------------------------------------------------------------------
t.test('format detection and sizes from real bytes', async (t) => {
  if (!need(t, ['zstd', 'xz', 'gzip', 'qemu-img'])) return;
  const dir = tempDir(t, 'deploy-formats');
  const raw = join(dir, 'raw');
  writeFileSync(raw, Buffer.alloc(3 * MiB + 5, 7));
  const sh = (argv: string[]) => spawnSync(argv[0] ?? 'false', argv.slice(1), { env: { PATH } });
  sh(['zstd', '-q', '-k', '-o', `${raw}.zst`, raw]);
  sh(['xz', '-k', raw]);
  sh(['gzip', '-k', raw]);
  sh(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, `${raw}.qcow2`]);
  spawnSync('sh', ['-c', 'zstd -q -c < "$0" > "$0.stream.zst"', raw], { env: { PATH } });
  const detect = (f: string) => lib(`detect_format "${f}"`).stdout.trim();
  t.equal(detect(`${raw}.zst`), 'zstd');
  t.equal(detect(`${raw}.xz`), 'xz');
  t.equal(detect(`${raw}.gz`), 'gzip');
  t.equal(detect(`${raw}.qcow2`), 'qcow2');
  t.equal(detect(raw), 'raw');
  t.equal(lib(`zstd_content_size "${raw}.zst"`).stdout.trim(), String(3 * MiB + 5), 'zstd: content size from the frame header');
  t.equal(lib(`zstd_content_size "${raw}.stream.zst"`).stdout.trim(), '', 'zstd from a pipe: size unknown');
  t.equal(lib(`be_uint "${raw}.qcow2" 24 8`).stdout.trim(), String(3 * MiB + 512), 'qcow2: virtual size from the header (qemu-img rounds up to a sector)');
});

// ------------------------------------------------------------------------------------------------
// Whole deploys against a fake ramboot server.

interface Status {
  id: string;
  state: string;
  stage: string;
  message: string;
  bytes: number;
  total: number | null;
  rateBps: number;
  etaSeconds: number | null;
  seconds: number;
  disk: string;
}

interface FakeServer {
  seed: string;
  statuses: Status[];
  requests: string[];
  /** What GET <seed>deploy answers (undefined: 204). */
  deploy: unknown;
  /** Artifacts by name. */
  artifacts: Map<string, Buffer>;
  /** Drop the connection after this many bytes of the next full (non-Range) artifact response. */
  dropAfter: number | undefined;
  /** Status code for POST status with state succeeded (default 204). */
  succeededCode: number;
  /** Artifacts sent slowly (1 MiB every 100 ms), as over a slow network. */
  slow: Set<string>;
}

async function fakeServer(t: Parameters<typeof tempDir>[0]): Promise<FakeServer> {
  const srv: FakeServer = { seed: '', statuses: [], requests: [], deploy: undefined, artifacts: new Map(), dropAfter: undefined, succeededCode: 204, slow: new Set() };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? '';
    srv.requests.push(`${req.method ?? ''} ${url}${req.headers.range ? ` ${req.headers.range}` : ''}`);
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      if (req.method === 'GET' && url === '/seed/deploy') {
        if (srv.deploy === undefined) res.statusCode = 204;
        else res.setHeader('Content-Type', 'application/json');
        res.end(srv.deploy === undefined ? undefined : JSON.stringify(srv.deploy));
        return;
      }
      if (req.method === 'POST' && url === '/seed/deploy/status') {
        const st = JSON.parse(body) as Status;
        srv.statuses.push(st);
        res.statusCode = st.state === 'succeeded' ? srv.succeededCode : 204;
        res.end();
        return;
      }
      const art = /^\/seed\/artifacts\/([a-z0-9.-]+)$/.exec(url)?.[1];
      const data = art === undefined ? undefined : srv.artifacts.get(art);
      if ((req.method === 'GET' || req.method === 'HEAD') && data !== undefined) {
        res.setHeader('Accept-Ranges', 'bytes');
        res.setHeader('ETag', `"${sha256(data).slice(0, 16)}"`);
        if (sendRange(req, res, data)) return;
        res.setHeader('Content-Length', data.length);
        if (art !== undefined && srv.slow.has(art) && req.method === 'GET') {
          let off = 0;
          const next = (): void => {
            if (res.destroyed) return;
            const chunk = data.subarray(off, off + MiB);
            off += chunk.length;
            if (off >= data.length) res.end(chunk);
            else res.write(chunk, () => setTimeout(next, 100));
          };
          next();
          return;
        }
        if (srv.dropAfter !== undefined) {
          const n = srv.dropAfter;
          srv.dropAfter = undefined;
          res.write(data.subarray(0, n), () => setTimeout(() => res.destroy(), 50));
          return;
        }
        res.end(data);
        return;
      }
      res.statusCode = 404;
      res.end();
    });
  });
  const port = await listenLocal(t, server);
  srv.seed = `http://127.0.0.1:${port}/seed/`;
  return srv;
}

interface Machine {
  dir: string;
  /** The file standing for /dev/vdb. */
  disk: string;
  /** What the fake `systemctl` was asked to do. */
  powerLog: string;
  env: Record<string, string>;
}

/** A "machine": a disk file of `diskMiB`, lsblk fixture naming it (plus `extraLsblk`), a fake systemctl. */
function machine(t: Parameters<typeof tempDir>[0], srv: FakeServer, diskMiB: number, extraLsblk: string[] = []): Machine {
  const dir = tempDir(t, 'deploy-machine');
  const root = join(dir, 'root');
  mkdirSync(join(root, 'dev'), { recursive: true });
  const disk = join(root, 'dev', 'vdb');
  writeFileSync(disk, Buffer.alloc(0));
  spawnSync('truncate', ['-s', `${diskMiB}M`, disk]);
  writeFileSync(join(dir, 'lsblk'), [`NAME="vdb" TYPE="disk" SIZE="${diskMiB * MiB}" RM="0" RO="0" MODEL="" SERIAL="deploy-test" TRAN="virtio"`, ...extraLsblk].join('\n') + '\n');
  const powerLog = join(dir, 'power.log');
  const power = join(dir, 'fake-systemctl');
  writeFileSync(power, `#!/bin/sh\nprintf '%s\\n' "$*" >> '${powerLog}'\n`, { mode: 0o755 });
  return {
    dir,
    disk,
    powerLog,
    env: {
      RAMBOOT_CMDLINE: `console=ttyS0 ds=nocloud-net;s=${srv.seed}`,
      RAMBOOT_DEPLOY_STATE: join(dir, 'state'),
      RAMBOOT_DEPLOY_ROOT: root,
      RAMBOOT_DEPLOY_LSBLK: join(dir, 'lsblk'),
      RAMBOOT_DEPLOY_POWER: power,
      RAMBOOT_DEPLOY_INTERVAL: '1',
      RAMBOOT_DEPLOY_TRIES: '2',
      RAMBOOT_DEPLOY_STATUS_TRIES: '2',
    },
  };
}

/** Runs the agent (asynchronously: the server lives in this process). */
function runAgent(m: Machine, extraEnv: Record<string, string> = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(AGENT, [], { env: { PATH, ...m.env, ...extraEnv }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 180_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

/** A small GPT disk image: one partition from 1 MiB to the end, filled with a known pattern. */
function gptImage(dir: string, sizeMiB: number): Buffer {
  const f = join(dir, `image-${sizeMiB}.img`);
  const data = Buffer.alloc(sizeMiB * MiB);
  for (let i = MiB; i < data.length; i += 4096) data.write(`ramboot deploy test block ${i}\n`, i);
  writeFileSync(f, data);
  const r = spawnSync('sgdisk', ['-n', '1:2048:0', '-t', '1:8300', '-c', '1:data', f], { encoding: 'utf8', env: { PATH } });
  if (r.status !== 0) throw new Error(`sgdisk: ${r.stderr}`);
  return readFileSync(f);
}

/** The partition table of an image file as sfdisk sees it: [start, size] of each partition. */
function partitions(file: string): [number, number][] {
  const out = spawnSync('sfdisk', ['-d', file], { encoding: 'utf8', env: { PATH } }).stdout;
  return [...out.matchAll(/start=\s*(\d+), size=\s*(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
}

const DEPLOY_TOOLS = ['curl', 'sha256sum', 'sgdisk', 'sfdisk', 'flock', 'zstd', 'xz', 'gzip', 'qemu-img', 'truncate'];

t.test('deploys against a fake ramboot server (a file stands for the disk)', async (t) => {
  if (!need(t, DEPLOY_TOOLS)) return;
  const srv = await fakeServer(t);
  const work = tempDir(t, 'deploy-images');
  const image = gptImage(work, 8);
  srv.artifacts.set('disk.img', image);
  const deployOf = (over: Record<string, unknown> = {}, source: Record<string, unknown> = {}) => ({
    id: 'dep-42',
    source: { url: `${srv.seed}artifacts/disk.img`, sha256: sha256(image), size: image.length, format: 'raw', ...source },
    disk: 'auto',
    after: 'reboot',
    grow: true,
    ...over,
  });

  t.test('raw, grow, reboot: written, verified, GPT backup moved, last partition grown, then reboot', async (t) => {
    srv.statuses.length = 0;
    srv.deploy = deployOf();
    const m = machine(t, srv, 16);
    const r = await runAgent(m);
    t.equal(r.code, 0, r.code === 0 ? 'exit 0' : r.stderr);
    const states = srv.statuses.map((s) => `${s.state}:${s.stage}`);
    t.equal(states[0], 'started:select-disk');
    t.equal(states[states.length - 1], 'succeeded:finish');
    t.notOk(states.some((s) => s.startsWith('failed')), states.join(' '));
    const done = srv.statuses[srv.statuses.length - 1];
    t.equal(done?.id, 'dep-42');
    t.equal(done?.disk, m.disk);
    t.equal(done?.bytes, image.length);
    const disk = readFileSync(m.disk);
    t.equal(disk.length, 16 * MiB, 'the disk file keeps its size');
    t.ok(disk.subarray(MiB, image.length - MiB).equals(image.subarray(MiB, image.length - MiB)), 'partition data written');
    t.equal(spawnSync('sgdisk', ['-v', m.disk], { encoding: 'utf8' }).stdout.match(/No problems found/)?.[0], 'No problems found', 'GPT valid, backup header at the end');
    const parts = partitions(m.disk);
    t.equal(parts.length, 1);
    t.ok((parts[0]?.[0] ?? 0) + (parts[0]?.[1] ?? 0) > 16 * 2048 - 64, `last partition grown to the end: ${JSON.stringify(parts)}`);
    t.match(r.stderr, /ramboot-deploy: not a block device: ramboot-fix skipped/);
    t.equal(readFileSync(m.powerLog, 'utf8'), 'reboot\n', 'after: reboot, once the server acknowledged');
    t.notOk(existsSync(join(m.env['RAMBOOT_DEPLOY_STATE'] ?? '', 'work')), 'work files removed');
  });

  t.test('zstd, xz, gzip (format detected when null), qcow2 (via RAM); stay', async (t) => {
    const dir = tempDir(t, 'deploy-compressed');
    const raw = join(dir, 'disk.img');
    writeFileSync(raw, image);
    spawnSync('zstd', ['-q', '-k', raw], { env: { PATH } });
    spawnSync('xz', ['-k', '-0', raw], { env: { PATH } });
    spawnSync('gzip', ['-k', raw], { env: { PATH } });
    spawnSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, `${raw}.qcow2`], { env: { PATH } });
    for (const [ext, fmt] of [['zst', null], ['xz', 'xz'], ['gz', null], ['qcow2', null]] as const) {
      const data = readFileSync(`${raw}.${ext}`);
      srv.artifacts.set(`disk.img.${ext}`, data);
      srv.statuses.length = 0;
      srv.deploy = deployOf({ after: 'stay', grow: false }, { url: `${srv.seed}artifacts/disk.img.${ext}`, sha256: sha256(data), size: data.length, format: fmt });
      const m = machine(t, srv, 12);
      const r = await runAgent(m);
      t.equal(r.code, 0, r.code === 0 ? `${ext}: exit 0` : `${ext}: ${r.stderr}`);
      t.equal(srv.statuses[srv.statuses.length - 1]?.state, 'succeeded', ext);
      const disk = readFileSync(m.disk);
      t.ok(disk.subarray(MiB, image.length - MiB).equals(image.subarray(MiB, image.length - MiB)), `${ext}: image written`);
      t.same(partitions(m.disk), partitions(raw), `${ext}: partition kept as it was (grow false)`);
      t.notOk(existsSync(m.powerLog), `${ext}: after: stay`);
    }
  });

  t.test('a dropped connection resumes with a Range request', async (t) => {
    srv.statuses.length = 0;
    srv.requests.length = 0;
    srv.deploy = deployOf({ after: 'poweroff' });
    srv.dropAfter = 3 * MiB + 123;
    const m = machine(t, srv, 8);
    const r = await runAgent(m);
    t.equal(r.code, 0, r.code === 0 ? 'exit 0' : r.stderr);
    t.match(r.stderr, /download interrupted at byte \d+ .*resuming/);
    t.ok(srv.requests.some((q) => /artifacts\/disk\.img bytes=\d+-$/.test(q) && !q.endsWith('bytes=0-')), srv.requests.join('\n'));
    t.equal(srv.statuses[srv.statuses.length - 1]?.state, 'succeeded');
    t.equal(readFileSync(m.powerLog, 'utf8'), 'poweroff\n');
  });

  t.test('failures: stage and reason reported, the machine stays (no reboot)', async (t) => {
    const dir = tempDir(t, 'deploy-fail');
    const raw = join(dir, 'disk.img');
    writeFileSync(raw, image);
    spawnSync('sh', ['-c', 'gzip -c < "$0" > "$0.gz" && zstd -q -k "$0" && qemu-img convert -f raw -O qcow2 "$0" "$0.qcow2" && qemu-img create -q -f qcow2 -b "$0" -F raw "$0.backed.qcow2"', raw], { env: { PATH } });
    for (const ext of ['gz', 'zst', 'qcow2', 'backed.qcow2']) srv.artifacts.set(`fail.${ext}`, readFileSync(`${raw}.${ext}`));
    const art = (ext: string) => ({ url: `${srv.seed}artifacts/fail.${ext}`, sha256: sha256(srv.artifacts.get(`fail.${ext}`) ?? Buffer.alloc(0)), size: null, format: null });
    const cases: [string, Record<string, unknown>, Record<string, unknown>, number, string[], RegExp][] = [
      ['sha256 mismatch (raw: found by the read-back)', {}, { sha256: 'f'.repeat(64) }, 16, [], /^verify: the 8388608 bytes written to .*vdb read back with sha256 [0-9a-f]{64}, expected f{64}: the download or the write is corrupt$/],
      ['sha256 mismatch (zstd: the download)', {}, { ...art('zst'), sha256: 'e'.repeat(64) }, 16, [], /^verify: sha256 of the download is [0-9a-f]{64}, expected e{64}$/],
      ['image larger than the disk (known size: nothing written)', {}, {}, 4, [], /^select-disk: the image \(8388608 bytes\) is larger than .*vdb \(4194304 bytes\)$/],
      ['several disks for auto', {}, {}, 16, [SDA], /^select-disk: disk "auto": 2 disks, pick one .*vdb.*\/dev\/sda/],
      ['missing by-id disk', { disk: '/dev/disk/by-id/nope' }, {}, 16, [], /^select-disk: disk \/dev\/disk\/by-id\/nope does not exist/],
      ['404 artifact', {}, { url: `${srv.seed}artifacts/missing.img` }, 16, [], /^fetch: cannot fetch .*missing\.img: .*404/],
      ['size disagrees', {}, { size: 12345 }, 16, [], /^fetch: the server says 12345 bytes, the artifact has 8388608$/],
      ['bad URL', {}, { url: 'ftp://x/y' }, 16, [], /^fetch: invalid deploy: source\.url must be an absolute http\(s\) URL/],
      ['gzip larger than the disk (size unknown until written)', {}, art('gz'), 4, [], /^write: the image \(8388608 bytes\) is larger than the disk \(4194304 bytes\)$/],
      ['zstd larger than the disk (size in the frame header)', {}, art('zst'), 4, [], /^select-disk: the image's first zstd frame \(8388608 bytes\) is larger than/],
      ['qcow2 larger than the disk (virtual size in the header)', {}, art('qcow2'), 4, [], /^select-disk: the qcow2 image's virtual size \(8388608 bytes\) is larger than/],
      ['qcow2 with a backing file', {}, art('backed.qcow2'), 16, [], /^verify: qcow2 images with a backing or external data file are refused$/],
    ];
    for (const [what, over, source, diskMiB, extra, re] of cases) {
      srv.statuses.length = 0;
      srv.deploy = deployOf(over, source);
      const m = machine(t, srv, diskMiB, extra);
      const r = await runAgent(m);
      t.equal(r.code, 1, `${what}: exit 1`);
      const last = srv.statuses[srv.statuses.length - 1];
      t.equal(last?.state, 'failed', `${what}: failed reported`);
      t.match(`${last?.stage}: ${last?.message}`, re, what);
      t.match(r.stderr, /staying in the RAM OS/, `${what}: stays`);
      t.notOk(existsSync(m.powerLog), `${what}: no reboot`);
      if (what.startsWith('image larger')) t.ok(readFileSync(m.disk).equals(Buffer.alloc(4 * MiB)), 'disk untouched');
    }
  });

  t.test('a compressed image whose download could not be hashed fails verify (the check is never skipped)', async (t) => {
    const dir = tempDir(t, 'deploy-nohash');
    const raw = join(dir, 'disk.img');
    writeFileSync(raw, image);
    spawnSync('zstd', ['-q', '-k', raw], { env: { PATH } });
    const data = readFileSync(`${raw}.zst`);
    srv.artifacts.set('nohash.zst', data);
    // A sha256sum that dies without a digest, first on the agent's PATH.
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'sha256sum'), '#!/bin/sh\ncat >/dev/null\nexit 1\n', { mode: 0o755 });
    srv.statuses.length = 0;
    srv.deploy = deployOf({ after: 'stay', grow: false }, { url: `${srv.seed}artifacts/nohash.zst`, sha256: sha256(data), size: data.length, format: 'zstd' });
    const m = machine(t, srv, 16);
    const r = await runAgent(m, { PATH: `${bin}:${PATH}` });
    t.equal(r.code, 1, 'exit 1');
    const last = srv.statuses[srv.statuses.length - 1];
    t.equal(`${last?.state} ${last?.stage}: ${last?.message}`, 'failed verify: no sha256 of the download (the hashing process failed)');
    t.notOk(existsSync(m.powerLog), 'no reboot');
  });

  t.test('no deploy (204); success not acknowledged (409) -> no reboot; a second run starts over', async (t) => {
    srv.statuses.length = 0;
    srv.deploy = undefined;
    const m = machine(t, srv, 16);
    const none = await runAgent(m);
    t.equal(none.code, 0);
    t.match(none.stderr, /no deploy for this machine/);
    t.equal(srv.statuses.length, 0);

    srv.deploy = deployOf();
    srv.succeededCode = 409;
    const stale = await runAgent(m);
    srv.succeededCode = 204;
    t.equal(stale.code, 1);
    t.match(stale.stderr, /no longer expects deploy dep-42 \(409\): not doing 'reboot'/);
    t.notOk(existsSync(m.powerLog), 'no reboot without the acknowledgement');

    // Leftovers of a killed run (work files) do not disturb the next one.
    mkdirSync(join(m.env['RAMBOOT_DEPLOY_STATE'] ?? '', 'work', 'junk'), { recursive: true });
    writeFileSync(join(m.disk), Buffer.alloc(16 * MiB, 0xff));
    srv.statuses.length = 0;
    const again = await runAgent(m);
    t.equal(again.code, 0, again.code === 0 ? 'exit 0' : again.stderr);
    t.equal(srv.statuses[srv.statuses.length - 1]?.state, 'succeeded');
    t.equal(readFileSync(m.powerLog, 'utf8'), 'reboot\n');
  });

  t.test('progress reports while writing: bytes, total, rate, ETA', async (t) => {
    const big = Buffer.alloc(48 * MiB);
    for (let i = 0; i < big.length; i += 512) big.writeUInt32LE(i, i);
    srv.artifacts.set('big.img', big);
    srv.statuses.length = 0;
    srv.deploy = deployOf({ after: 'stay', grow: false }, { url: `${srv.seed}artifacts/big.img`, sha256: sha256(big), size: big.length });
    srv.slow.add('big.img');
    const m = machine(t, srv, 64);
    const r = await runAgent(m);
    t.equal(r.code, 0, r.code === 0 ? 'exit 0' : r.stderr);
    const progress = srv.statuses.filter((s) => s.state === 'progress');
    const writing = progress.filter((p) => p.stage === 'write' && p.bytes > 0);
    t.ok(writing.length >= 2, `progress while writing (~5 s at 1 s intervals): ${writing.length}`);
    t.ok(writing.some((p) => p.rateBps > 0 && p.etaSeconds !== null), 'rate and ETA once bytes flow');
    for (const p of progress) {
      t.ok(p.bytes >= 0 && p.bytes <= big.length, `progress bytes ${p.bytes}`);
      t.ok(p.total === big.length || p.stage === 'verify', `total ${p.total}`);
      t.ok(p.rateBps >= 0);
    }
    const done = srv.statuses[srv.statuses.length - 1];
    t.equal(done?.state, 'succeeded');
    t.equal(done?.total, big.length);
    t.ok((done?.seconds ?? -1) >= 0);
    t.ok(readFileSync(m.disk).subarray(0, big.length).equals(big), 'written');
  });
});

// ------------------------------------------------------------------------------------------------
t.test('a real disk (loop device): GPT moved, ext4 root grown, ramboot-fix run with /boot (and /boot/efi) mounted from its fstab', async (t) => {
  const tools = [...DEPLOY_TOOLS, 'losetup', 'mkfs.ext4', 'dumpe2fs', 'debugfs', 'mformat', 'mcopy', 'blkid', 'findmnt', 'mount', 'umount', 'partprobe'];
  const missing = [...missingRequirements(['root']), ...tools.filter((x) => findExecutable(x) === undefined).map((x) => `${x} not found on PATH`)];
  if (missing.length === 0 && spawnSync('losetup', ['-f'], { encoding: 'utf8' }).status !== 0) missing.push('no free loop device (losetup -f failed)');
  if (!reportMissing(t, missing)) return;
  const sh = (cmd: string, args: string[]): string => {
    const r = spawnSync(cmd, args, { encoding: 'utf8', env: { PATH }, timeout: 120_000 });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  // The ESP is only named in the fstab when this kernel can mount FAT (the RAM OS's can; a build
  // host's kernel may not).
  const vfat = /\tvfat$/m.test(readFileSync('/proc/filesystems', 'utf8'));
  if (!vfat) t.comment('this kernel has no vfat: /boot/efi is left out of the image\'s fstab');
  const dir = tempDir(t, 'deploy-loop');
  // The image: ESP (FAT, serial 5241-4D42), /boot (ext4, named by LABEL= in the fstab) and the
  // ext4 root. Made without mounting anything: mtools and mke2fs -d at offsets.
  const img = join(dir, 'image.img');
  writeFileSync(img, '');
  sh('truncate', ['-s', '64M', img]);
  sh('sgdisk', ['-n', '1:2048:+8M', '-t', '1:ef00', '-c', '1:esp', '-n', '2:0:+12M', '-t', '2:8300', '-c', '2:boot', '-n', '3:0:0', '-t', '3:8300', '-c', '3:root', img]);
  const range = (n: number): [number, number] => {
    const info = sh('sgdisk', ['-i', String(n), img]);
    return [Number(/^First sector: (\d+)/m.exec(info)?.[1]), Number(/^Last sector: (\d+)/m.exec(info)?.[1])];
  };
  sh('mformat', ['-i', `${img}@@1048576`, '-T', String(8 * 2048), '-h', '64', '-s', '32', '-H', '2048', '-N', '52414d42', '::']);
  const ext4 = (n: number, uuid: string, label: string, tree: string): void => {
    const [a, b] = range(n);
    sh('mkfs.ext4', ['-q', '-F', '-b', '4096', '-U', uuid, '-L', label, '-E', `offset=${a * 512}`, '-d', tree, img, String(Math.floor(((b - a + 1) * 512) / 4096))]);
  };
  const bootUuid = '0b3c1a52-7a3c-4d1e-9f00-52414d420002';
  const rootUuid = '0b3c1a52-7a3c-4d1e-9f00-52414d420001';
  const bootTree = join(dir, 'bootfs');
  makeTree(bootTree, { 'vmlinuz-test': 'kernel\n', efi: { dir: true } });
  ext4(2, bootUuid, 'BOOT', bootTree);
  const tree = join(dir, 'rootfs');
  makeTree(tree, {
    'etc/fstab': `UUID=${rootUuid} / ext4 errors=remount-ro 0 1\nLABEL=BOOT /boot ext4 defaults 0 2\n${vfat ? 'UUID=5241-4D42 /boot/efi vfat umask=0077 0 1\n' : ''}`,
    'etc/hostname': 'image\n',
    boot: { dir: true },
    'lib/systemd/system/serial-getty@.service': '[Unit]\n',
  });
  ext4(3, rootUuid, 'root', tree);
  const image = readFileSync(img);
  // The target: a 96 MiB loop device with partition scanning, named through a by-id link.
  const target = join(dir, 'target.img');
  writeFileSync(target, '');
  sh('truncate', ['-s', '96M', target]);
  const loop = sh('losetup', ['-f', '--show', '-P', target]);
  const name = loop.replace('/dev/', '');
  const srv = await fakeServer(t);
  const m = machine(t, srv, 96);
  t.teardown(() => {
    // Whatever a failed run left mounted under its state directory, then the loop device.
    const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '');
    for (const mp of mounts.filter((x) => x.startsWith(m.dir)).reverse()) spawnSync('umount', ['-l', mp]);
    spawnSync('losetup', ['-d', loop]);
  });
  const devRoot = m.env['RAMBOOT_DEPLOY_ROOT'] ?? '';
  mkdirSync(join(devRoot, 'dev/disk/by-id'), { recursive: true });
  symlinkSync(loop, join(devRoot, 'dev', name));
  symlinkSync(`../../${name}`, join(devRoot, 'dev/disk/by-id/ramboot-test-loop'));
  writeFileSync(m.env['RAMBOOT_DEPLOY_LSBLK'] ?? '', `NAME="${name}" TYPE="disk" SIZE="${96 * MiB}" RM="0" RO="0" MODEL="" SERIAL="" TRAN=""\n`);
  srv.artifacts.set('loop.img', image);
  srv.deploy = { id: 'dep-loop', source: { url: `${srv.seed}artifacts/loop.img`, sha256: sha256(image), size: image.length, format: null }, disk: '/dev/disk/by-id/ramboot-test-loop', after: 'stay', grow: true };
  const r = await runAgent(m, { RAMBOOT_DEPLOY_FIX: join(HOOKS, '..', 'fixes', 'ramboot-fix') });
  t.equal(r.code, 0, r.code === 0 ? 'exit 0' : r.stderr);
  t.equal(srv.statuses[srv.statuses.length - 1]?.state, 'succeeded');
  t.match(r.stderr, /ramboot-deploy: partition 3 and its ext4 filesystem grown to the end of the disk/);
  t.match(r.stderr, /ramboot-deploy: fix: ramboot-fix: 30-serial-getty: ok/);
  t.match(r.stderr, /ramboot-fix done on the root \/dev\/loop\d+p3/);
  t.match(sh('sgdisk', ['-v', loop]), /No problems found/);
  const p3 = `${loop}p3`;
  const blocks = Number(/^Block count:\s+(\d+)/m.exec(sh('dumpe2fs', ['-h', p3]))?.[1]);
  t.ok(blocks * 4096 > 70 * MiB, `ext4 grown: ${blocks} blocks of 4 KiB (the image's root: 43 MiB)`);
  const fstab = sh('debugfs', ['-R', 'cat /etc/fstab', p3]);
  t.match(fstab, new RegExp(`^UUID=${rootUuid} / ext4 errors=remount-ro 0 1$`, 'm'), 'fstab: root');
  t.match(fstab, new RegExp(`^UUID=${bootUuid} /boot ext4 defaults 0 2$`, 'm'), 'fstab: /boot was mounted during the fix (LABEL= became the UUID of what was mounted)');
  if (vfat) t.match(fstab, /^UUID=5241-4D42 \/boot\/efi vfat umask=0077 0 1$/m, 'fstab: the ESP, mounted on /boot/efi');
  t.match(sh('debugfs', ['-R', 'stat /etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service', p3]), /Type: symlink/, 'serial getty enabled by ramboot-fix');
  t.notOk(readFileSync('/proc/self/mounts', 'utf8').includes(m.dir), 'nothing left mounted');

  // A gzip image whose size is only known once written, bigger than the disk: the disk says ENOSPC.
  const big = join(dir, 'big.img');
  writeFileSync(big, '');
  sh('truncate', ['-s', '128M', big]);
  spawnSync('sh', ['-c', 'gzip -1 -c < "$0" > "$0.gz"', big], { env: { PATH } });
  const gz = readFileSync(`${big}.gz`);
  srv.artifacts.set('big.img.gz', gz);
  srv.statuses.length = 0;
  srv.deploy = { id: 'dep-loop-2', source: { url: `${srv.seed}artifacts/big.img.gz`, sha256: sha256(gz), size: null, format: null }, disk: '/dev/disk/by-id/ramboot-test-loop', after: 'reboot', grow: true };
  // What a killed run leaves: a partition of the disk still mounted under the state directory. The
  // next run unmounts it first (else the disk would be busy).
  const leftover = join(m.env['RAMBOOT_DEPLOY_STATE'] ?? '', 'mnt');
  mkdirSync(leftover, { recursive: true });
  sh('mount', ['-o', 'ro', `${loop}p2`, leftover]);
  const r2 = await runAgent(m);
  t.notOk(readFileSync('/proc/self/mounts', 'utf8').includes(m.dir), 'the leftover mount is gone');
  t.equal(r2.code, 1, 'too big: exit 1');
  const last = srv.statuses[srv.statuses.length - 1];
  t.match(`${last?.state} ${last?.stage}: ${last?.message}`, /^failed write: the image is larger than the disk \(100663296 bytes\): no space left after 100663296 bytes$/);
  t.notOk(existsSync(m.powerLog), 'no reboot');
});

// ------------------------------------------------------------------------------------------------
t.test('the installed script is the POSIX sh one the lint test checks', async (t) => {
  t.ok(readFileSync(AGENT, 'utf8').startsWith('#!/bin/sh\n'));
  t.equal(statSync(AGENT).mode & 0o111, 0o111, 'executable');
  t.ok(lstatSync(join(HOOKS, '65-deploy')).isFile());
});
