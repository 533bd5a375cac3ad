import t from 'tap';
import { mkdtemp, mkdir, rm, readFile, link, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirements } from './lib/requirements.js';
import { startQemu } from './lib/qemu.js';
import { startRambootServer } from './lib/ramboot-server.js';
import { freePort } from './lib/free-port.js';
import { run } from './lib/run.js';
import { builtImage, type BuiltImage } from './build-lib/built-image.js';
import { bootAndSsh, sshCommand } from './build-lib/ssh-boot.js';
import { startSeedServer } from './build-lib/seed-server.js';

/**
 * The real thing end to end: `ramboot build` (cached in .cache/build-images by its inputs), the real
 * server with a registered machine, QEMU (TCG) booting the image's kernel + initrd with the command
 * line the server's per-MAC iPXE script gives, SSH in with the seed's key, then image a blank disk.
 */
const MAC = '52:54:00:4a:11:01';
// A cold build (mmdebstrap + dpkg in a chroot on 2 busy cores) can take 15 minutes before the boots.
t.setTimeout(45 * 60_000);

if (requirements(t, ['root', 'qemu', 'ssh-keygen', 'unshare', 'setpriv'])) {
  let image: BuiltImage;

  t.before(async () => {
    image = await builtImage({
      onLine: (l) => {
        if (/"event":"build\.(start|done|step|mmdebstrap\.step)"/.test(l)) t.comment(l.slice(0, 200));
      },
    });
    t.comment(`image: ${image.imageDir} (${image.built ? `built in ${image.buildSeconds} s` : 'cached'})`);
  });

  t.test('built image: manifest, files, no root= on the command line', async (t) => {
    const m = image.manifest;
    t.equal(m.kernel, 'vmlinuz');
    t.same(m.initrd, ['initrd.img']);
    t.notMatch(m.cmdline, /(^|\s)root=/, 'no root= reaches the kernel');
    t.match(m.kernelVersion ?? '', /^\d+\.\d+\.\d+-\d+-amd64$/, 'Debian generic kernel');
    t.ok(m.packages.some((p) => p.name === 'cloud-init'), 'cloud-init is in the cloud flavour');
    t.ok(m.packages.some((p) => p.name === 'openssh-server'), 'openssh-server');
    t.ok(m.minRamMiB >= 256 && m.minRamMiB <= 1024, `minRamMiB ${m.minRamMiB}`);
    const total = Object.values(m.files).reduce((a, f) => a + f.size, 0);
    t.ok(total <= 150e6, `loader fetches ${Math.round(total / 1e6)} MB (goal <= 150 MB)`);
  });

  t.test('boots from the server data, SSH as root with the seed key, images a blank disk', async (t) => {
    const work = await mkdtemp(join(tmpdir(), 'ramboot-bootit-'));
    t.teardown(() => rm(work, { recursive: true, force: true }));
    // Server data dir with the built image (hard links: no copy of 100 MB).
    const imgDir = join(work, 'data', 'images', 'default');
    await mkdir(imgDir, { recursive: true });
    for (const f of ['manifest.json', ...Object.keys(image.manifest.files)]) {
      await link(join(image.imageDir, f), join(imgDir, f)).catch(() => copyFile(join(image.imageDir, f), join(imgDir, f)));
    }
    await run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'ramboot-test', '-f', join(work, 'id')]);
    const pub = (await readFile(join(work, 'id.pub'), 'utf8')).trim();
    const srv = await startRambootServer(t, { dataDir: join(work, 'data'), publicUrl: (p) => `http://10.0.2.2:${p}` });
    const put = await srv.api('PUT', `/api/v1/machines/${MAC}`, {
      hostname: 'bootit', sshKeys: [pub], boot: 'once', image: 'default',
    });
    t.ok(put.status === 200 || put.status === 201, `machine registered (${put.status} ${put.text.slice(0, 200)})`);
    const res = await fetch(`${srv.url}/ipxe?mac=${MAC}&platform=pcbios&memsize=1024`);
    const script = await res.text();
    const kline = script.split('\n').find((l) => l.startsWith('kernel '));
    t.ok(kline, `the server's per-MAC iPXE script has a kernel line (HTTP ${res.status}): ${script.slice(0, 300)}`);
    let cmdline: string;
    if (kline) {
      // "kernel <url> <cmdline> || goto failed": the command line the server gives this machine.
      cmdline = kline.replace(/^kernel \S+ /, '').replace(/\s*\|\|.*$/, '');
      t.match(cmdline, /ds=nocloud-net;s=http:\/\/10\.0\.2\.2:\d+\/cloud-init\//, 'seed URL on the command line');
    } else {
      // Still check the image itself, with a seed served here.
      t.comment('!!!!! no boot script from the server: booting with a test NoCloud seed instead');
      const seed = await startSeedServer(t, { hostname: 'bootit', sshKey: pub });
      cmdline = `${image.manifest.cmdline} BOOTIF=01-${MAC.replaceAll(':', '-')} ds=nocloud-net;s=http://10.0.2.2:${seed.port}/seed/`;
    }

    const disk = join(work, 'disk.raw');
    await run(['qemu-img', 'create', '-q', '-f', 'raw', disk, '2G']);
    const sshPort = await freePort();
    const r = await bootAndSsh(t, {
      name: 'build-boot',
      kernel: join(imgDir, 'vmlinuz'),
      initrd: join(imgDir, 'initrd.img'),
      append: `${cmdline} panic=-1`,
      memoryMiB: Math.max(image.manifest.minRamMiB, 512),
      mac: MAC,
      disk,
      sshPort,
      key: join(work, 'id'),
    });
    t.comment(`SSH accepted the seed key ${r.seconds} s after QEMU started`);

    const ssh = (cmd: string) => sshCommand(sshPort, join(work, 'id'), cmd);
    const fstype = (await ssh('findmnt -n -o FSTYPE /')).stdout.trim();
    t.ok(['tmpfs', 'rootfs', 'overlay'].includes(fstype), `/ is ${fstype}`);
    if (fstype === 'overlay') {
      const opts = (await ssh('findmnt -n -o OPTIONS /')).stdout;
      t.match(opts, /upperdir=\/run\/rw\/upper/, 'overlay upper layer is the initrd tmpfs');
      const loops = (await ssh('losetup -n -O BACK-FILE')).stdout.trim();
      t.match(loops, /^\/root\.squashfs( \(deleted\))?$/, `only loop device is the RAM root image: ${loops}`);
    }
    const blockMounts = (await ssh("awk '$1 ~ \"^/dev/\" && $1 !~ \"^/dev/loop\" {print $1\" \"$2}' /proc/mounts")).stdout.trim();
    t.equal(blockMounts, '', 'no disk block device is mounted');
    t.equal((await ssh('lsblk -n -o MOUNTPOINTS /dev/vda | tr -d "[:space:]"')).stdout, '', '/dev/vda not mounted');
    t.equal((await ssh('hostname')).stdout.trim(), 'bootit', 'hostname from the seed');
    t.match((await ssh('passwd -S root')).stdout, /^root L/, 'root password locked');

    const imaging = await ssh([
      'set -e',
      "printf 'label: gpt\\n,,L\\n' | sfdisk -q /dev/vda",
      'udevadm settle',
      'mkfs.ext4 -q -F -L ramtarget /dev/vda1',
      'mkdir -p /target && mount /dev/vda1 /target',
      'mkdir -p /target/etc && echo imaged > /target/etc/marker',
      "printf '/dev/sda1 / ext4 defaults 0 1\\n' > /target/etc/fstab",
      'ramboot-fix /target',
      'cat /target/etc/fstab',
      'umount /target',
      'echo IMAGING-OK',
    ].join('\n'));
    t.match(imaging.stdout, /IMAGING-OK/, `sfdisk + mkfs.ext4 + mount + write + ramboot-fix: ${imaging.stderr}`);
    const uuid = (await ssh('blkid -s UUID -o value /dev/vda1')).stdout.trim();
    t.match(imaging.stdout, new RegExp(`UUID=${uuid}\\s+/\\s+ext4`), 'ramboot-fix rewrote fstab to the new UUID');

    if (kline) {
      // cloud-init's phone_home (cloud-final) reports the machine: host keys stored, `once` -> `local`
      await srv.waitForLog((l) => l['event'] === 'phone-home.ready' && l['mac'] === MAC, 600_000);
      const m = (await srv.api('GET', `/api/v1/machines/${MAC}`)).json as { boot: string; status: { state: string; hostKeys: string[] } };
      t.equal(m.status.state, 'ready', 'the OS phoned home');
      t.equal(m.boot, 'local', 'once flipped to local: the next PXE boot goes to the disk');
      const hostKey = (await ssh('cut -d" " -f1,2 /etc/ssh/ssh_host_ed25519_key.pub')).stdout.trim();
      t.ok(m.status.hostKeys.includes(hostKey), 'the host key sshd uses was reported');
      const kh = await srv.api('GET', `/api/v1/machines/${MAC}/known_hosts`);
      t.ok(kh.text.split('\n').some((l) => l.endsWith(` ${hostKey}`)), `known_hosts line for it: ${kh.text}`);
      const again = await fetch(`${srv.url}/ipxe?mac=${MAC}&platform=pcbios`);
      t.match(await again.text(), /exit 0/, 'no loop back into ramboot');
      const ev = (await srv.api('GET', `/api/v1/machines/${MAC}/events`)).json as { events: { event: string }[] };
      const names = ev.events.map((e) => e.event);
      for (const name of ['ipxe.script', 'cloud-init.user-data', 'os.booted', 'phone-home.ready']) t.ok(names.includes(name), `timeline has ${name}`);
    }
  });

  t.test('too little RAM: /init says so on the console', async (t) => {
    // 16 MiB under the floor: the initrd still unpacks (that needs about 2 x squashfs + 80 MiB and
    // minRamMiB >= 2 x squashfs + 96), so /init runs and must refuse (it wants MemTotal >= minRamMiB
    // - 64; MemTotal is 53 MiB under -m). Lower still, the kernel panics out of memory while
    // unpacking, before /init: loud too, and the server's iPXE script refuses such machines first.
    const ram = image.manifest.minRamMiB - 16;
    const vm = startQemu(t, {
      name: 'build-boot-lowram',
      memoryMiB: ram,
      kernel: join(image.imageDir, 'vmlinuz'),
      initrd: join(image.imageDir, 'initrd.img'),
      append: `${image.manifest.cmdline} panic=-1`,
      failOn: null,
    });
    const m = await vm.waitFor(/RAMBOOT-FATAL: (.*)/, { timeoutMs: 240_000 });
    t.match(m[1] ?? '', /not enough RAM|not fully unpacked/, `loud failure at ${ram} MiB: ${m[1]}`);
    t.notOk(vm.seen(/starting systemd/), 'never started the OS');
  });
}
