// The deploy agent end to end in the real RAM OS: the lean image built by `ramboot build` (cached),
// booted in QEMU (TCG) with a blank virtio disk, a fake ramboot server on 127.0.0.1 (reached only
// through a guestfwd of a restricted user-mode network) that assigns the dual-firmware test disk
// (test/lib/deploy-disk.ts) as the deploy. The agent writes it, reports, and reboots (QEMU exits:
// -no-reboot); then the written disk must boot by itself with SeaBIOS and with OVMF.
import t from 'tap';
import { listenLocal, sendRange } from '../../test/lib/listen.js';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { builtImage } from '../../test/lib/built-image.js';
import { buildDeployDisk, deployDiskMissing } from '../../test/lib/deploy-disk.js';
import { qemuOptValue, startQemu } from '../../test/lib/qemu.js';
import { missingRequirements, reportMissing } from '../../test/lib/requirements.js';
import { runOk } from '../../common/run.js';
import { tempDir } from '../../test/lib/temp-dir.js';

// A cold image build can take 15 minutes on a busy machine, then two boots under TCG.
t.setTimeout(45 * 60_000);

const MARKER = 'RAMBOOT-DEPLOYED-DISK-OK';
const MiB = 1024 * 1024;
const GUEST_SERVER = '10.0.2.100';

interface Status {
  id: string;
  state: string;
  stage: string;
  message: string;
  bytes: number;
  total: number | null;
  disk: string;
}

t.test('lean RAM OS: the agent deploys the dual-firmware disk, reboots, and the disk boots with SeaBIOS and OVMF', async (t) => {
  const missing = [...missingRequirements(['root', 'qemu', 'ovmf', 'busybox', 'unshare', 'setpriv', 'apt-get', 'dpkg']), ...deployDiskMissing()];
  if (!reportMissing(t, missing)) return;
  const image = await builtImage({ flavour: 'lean' });
  t.comment(`lean image: ${image.imageDir} (${image.built ? `built in ${image.buildSeconds} s` : 'cached'})`);
  const source = await buildDeployDisk({ marker: MARKER, sizeMiB: 64 });
  const sourceBytes = readFileSync(source);
  const sourceSha = createHash('sha256').update(sourceBytes).digest('hex');

  const dir = tempDir(t, 'deploy-boot');
  const target = join(dir, 'target.img');
  writeFileSync(target, '');
  await runOk('truncate', ['-s', '128M', target]);

  // The fake ramboot server: the NoCloud seed, events, the deploy, its status reports, the artifact.
  const statuses: Status[] = [];
  const seed = `http://${GUEST_SERVER}/seed/`;
  const deploy = {
    id: 'dep-e2e-1',
    source: { url: `${seed}artifacts/disk.img`, sha256: sourceSha, size: sourceBytes.length, format: null },
    disk: 'auto',
    after: 'reboot',
    grow: true,
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      const url = req.url ?? '';
      if (req.method === 'GET' && url === '/seed/user-data') res.end('#cloud-config\n');
      else if (req.method === 'GET' && url === '/seed/meta-data') res.end('instance-id: i-deploy-e2e\nlocal-hostname: deploytest\n');
      else if (req.method === 'POST' && url === '/seed/event') {
        res.statusCode = 204;
        res.end();
      } else if (req.method === 'GET' && url === '/seed/deploy') {
        // Once the deploy succeeded the server flips the machine to local boot: no deploy any more.
        if (statuses.some((s) => s.state === 'succeeded')) {
          res.statusCode = 204;
          res.end();
        } else {
          res.setHeader('Content-Type', 'application/json');
          res.end(JSON.stringify(deploy));
        }
      } else if (req.method === 'POST' && url === '/seed/deploy/status') {
        statuses.push(JSON.parse(body) as Status);
        res.statusCode = 204;
        res.end();
      } else if ((req.method === 'GET' || req.method === 'HEAD') && url === '/seed/artifacts/disk.img') {
        res.setHeader('Accept-Ranges', 'bytes');
        if (!sendRange(req, res, sourceBytes)) {
          res.setHeader('Content-Length', sourceBytes.length);
          res.end(sourceBytes);
        }
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
  });
  const port = await listenLocal(t, server);

  // restrict=on: the guest reaches nothing but the guestfwd to this process's server.
  const vm = startQemu(t, {
    name: 'deploy-boot-ramos',
    memoryMiB: Math.max(1024, image.manifest.minRamMiB + 256),
    smp: 2,
    kernel: join(image.imageDir, 'vmlinuz'),
    initrd: join(image.imageDir, 'initrd.img'),
    append: `${image.manifest.cmdline} console=ttyS0,115200 panic=-1 ds=nocloud-net;s=${seed}`,
    disks: [{ path: target, format: 'raw' }],
    nics: [{ type: 'user', mac: '52:54:00:4a:11:77', restrict: true, guestfwd: [`tcp:${GUEST_SERVER}:80-cmd:busybox nc 127.0.0.1 ${port}`], romfile: '' }],
  });
  await vm.waitFor(/ramboot-deploy: deploy dep-e2e-1: /, { timeoutMs: 900_000 });
  t.pass('the agent started and read the deploy');
  await vm.waitFor(/ramboot-deploy: deploy dep-e2e-1 succeeded/, { timeoutMs: 900_000 });
  const exit = await vm.waitForExit(300_000);
  t.equal(exit.code, 0, 'the guest rebooted (QEMU -no-reboot exits)');
  t.equal(statuses[0]?.state, 'started');
  const done = statuses[statuses.length - 1];
  t.equal(done?.state, 'succeeded', `last status: ${JSON.stringify(done)}`);
  t.equal(done?.disk, '/dev/vda', 'auto picked the only disk');
  t.ok(vm.seen(/ramboot-deploy: no Linux root .* ramboot-fix skipped/), 'no Linux root on the test disk: fix skipped with a note');
  t.notOk(statuses.some((s) => s.state === 'failed'), 'no failure reported');

  const gpt = (await runOk('sgdisk', ['-v', target])).stdout;
  t.match(gpt, /No problems found/, 'GPT valid on the bigger disk (backup header moved to its end)');
  const part = (await runOk('sgdisk', ['-i', '1', target])).stdout;
  t.match(part, /Attribute flags: 0000000000000004/, 'legacy BIOS bootable attribute kept through the grow');
  const lastSector = Number(/^Last sector: (\d+)/m.exec(part)?.[1]);
  t.ok(lastSector > (100 * MiB) / 512, `partition grown towards the end of the 128 MiB disk (last sector ${lastSector})`);

  for (const firmware of ['bios', 'uefi'] as const) {
    const disk = startQemu(t, {
      name: `deploy-boot-disk-${firmware}`,
      firmware,
      memoryMiB: 256,
      extraArgs: ['-drive', `if=none,id=d0,format=raw,snapshot=on,file=${qemuOptValue(target)}`, '-device', 'virtio-blk-pci,drive=d0,bootindex=1'],
    });
    const m = await disk.waitFor(new RegExp(`${MARKER} cmdline=(.*)$`), { timeoutMs: 300_000 });
    t.match(m[1] ?? '', firmware === 'bios' ? /ramboot\.loader=syslinux/ : /ramboot\.loader=systemd-boot/, `${firmware}: the deployed disk boots by itself`);
    await disk.stop();
  }
});
