import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requirements } from '../lib/requirements.js';
import { builtImage } from '../lib/built-image.js';
import { sshCommand } from '../lib/ssh-boot.js';
import { startQemu } from '../lib/qemu.js';
import { seedCmdline, startSeedServer } from '../lib/seed-server.js';
import { freePort } from '../lib/free-port.js';
import { tempDir } from '../lib/temp-dir.js';
import { runOk } from '../../common/run.js';
import { INSPECT_SCRIPT, inspectRemoteCommand, type InspectMode } from '../../cli/transfer/inspect-script.js';
import { parseInspection } from '../../cli/transfer/inspect.js';

/**
 * The inspection script against real machines: the lean RAM OS booted under QEMU (TCG) with virtio disks
 * that this test partitions itself (GPT + BIOS boot, MBR with logical partitions, LVM, a UEFI ESP under
 * OVMF, LUKS + md RAID), read over real SSH in one round trip, parsed into an Inventory. With
 * RAMBOOT_WRITE_FIXTURES=1 the raw outputs are saved as cli/transfer/fixtures/*.txt, which the fast unit
 * tests parse.
 */
t.setTimeout(45 * 60_000);

const FIXTURES = join(fileURLToPath(new URL('../../cli/transfer/fixtures/', import.meta.url)));
const WRITE = process.env['RAMBOOT_WRITE_FIXTURES'] === '1';

/** Runs the inspection script on the guest: the script on stdin, `sh -s -- MODE`. */
function runInspect(port: number, key: string, mode: InspectMode): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('ssh', [
      '-i', key, '-p', String(port),
      '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes',
      '-o', 'ConnectTimeout=10', '-o', 'LogLevel=ERROR', '-o', 'IdentitiesOnly=yes',
      'root@127.0.0.1', inspectRemoteCommand(mode),
    ], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 255, stdout, stderr });
    });
    child.stdin.end(INSPECT_SCRIPT);
  });
}

// Test-local setup scripts (fixed text). `wipe` takes every disk back to blank.
const WIPE = `
set +e
swapoff -a
for m in $(findmnt -rn -o TARGET | grep '^/mnt/t' | sort -r); do umount "$m"; done
umount /home 2>/dev/null
cryptsetup close secret 2>/dev/null
vgchange -an >/dev/null 2>&1
mdadm --stop --scan 2>/dev/null
for d in /dev/vd?; do
  for p in $d?*; do [ -b "$p" ] && wipefs -q -a -f "$p"; done
  wipefs -q -a -f "$d"
  blockdev --rereadpt "$d"
done
udevadm settle
rm -rf /etc/lvm/devices 2>/dev/null
mkdir -p /mnt/t
true
`;

const SETUP = {
  'gpt-bios': `
set -e
sgdisk -n1:1M:+1M -t1:ef02 -c1:bios -A1:set:2 -n2:0:+1200M -t2:8300 -c2:root -n3:0:+700M -t3:8302 -c3:home -n4:0:+256M -t4:8200 -c4:swap /dev/vda
partprobe /dev/vda; udevadm settle
mkfs.ext4 -q -L root /dev/vda2; mkfs.ext4 -q -L home /dev/vda3; mkswap -L swap /dev/vda4 >/dev/null
mount /dev/vda2 /mnt/t; mkdir -p /mnt/t/etc /mnt/t/home; mount /dev/vda3 /mnt/t/home
dd if=/dev/zero of=/mnt/t/big bs=1M count=100 status=none; dd if=/dev/zero of=/mnt/t/home/data bs=1M count=40 status=none
u() { blkid -s UUID -o value "$1"; }
printf 'UUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s /home ext4 defaults 0 2\n/dev/vda4 none swap sw 0 0\ntmpfs /tmp tmpfs defaults 0 0\n' "$(u /dev/vda2)" "$(u /dev/vda3)" > /mnt/t/etc/fstab
umount /mnt/t/home /mnt/t
`,
  mbr: `
set -e
printf 'label: dos\\n,1200M,83,*\\n,,5\\n,256M,82\\n,700M,83\\n' | sfdisk -q /dev/vda
partprobe /dev/vda; udevadm settle
mkfs.ext4 -q -L root /dev/vda1; mkswap /dev/vda5 >/dev/null; mkfs.ext4 -q /dev/vda6
mount /dev/vda1 /mnt/t; mkdir -p /mnt/t/etc /mnt/t/srv
dd if=/dev/zero of=/mnt/t/big bs=1M count=80 status=none
u() { blkid -s UUID -o value "$1"; }
printf 'UUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s none swap sw 0 0\n/dev/vda6 /srv ext4 defaults 0 2\n' "$(u /dev/vda1)" "$(u /dev/vda5)" > /mnt/t/etc/fstab
umount /mnt/t
`,
  lvm: `
set -e
sgdisk -n1:1M:+1M -t1:ef02 -n2:0:+300M -t2:8300 -n3:0:0 -t3:8e00 /dev/vda
partprobe /dev/vda; udevadm settle
mkfs.ext4 -q -L boot /dev/vda2
pvcreate -q /dev/vda3; vgcreate -q vg0 /dev/vda3
lvcreate -q -L 1200M -n root vg0; lvcreate -q -L 600M -n home vg0; lvcreate -q -L 200M -n swap vg0
mkfs.ext4 -q /dev/vg0/root; mkfs.xfs -q /dev/vg0/home; mkswap /dev/vg0/swap >/dev/null
mount /dev/vg0/root /mnt/t; mkdir -p /mnt/t/etc /mnt/t/boot /mnt/t/home
mount /dev/vda2 /mnt/t/boot; mount /dev/vg0/home /mnt/t/home
dd if=/dev/zero of=/mnt/t/big bs=1M count=90 status=none; dd if=/dev/zero of=/mnt/t/boot/vmlinuz bs=1M count=20 status=none
u() { blkid -s UUID -o value "$1"; }
printf '/dev/mapper/vg0-root / ext4 errors=remount-ro 0 1\nUUID=%s /boot ext4 defaults 0 2\nUUID=%s /home xfs defaults 0 2\n/dev/vg0/swap none swap sw 0 0\n' "$(u /dev/vda2)" "$(u /dev/vg0/home)" > /mnt/t/etc/fstab
umount /mnt/t/home /mnt/t/boot /mnt/t
`,
  uefi: `
set -e
sgdisk -n1:1M:+256M -t1:ef00 -c1:esp -n2:0:+1500M -t2:8304 -c2:root -n3:0:+256M -t3:8200 /dev/vda
partprobe /dev/vda; udevadm settle
mkfs.vfat -F 32 -n ESP /dev/vda1 >/dev/null; mkfs.ext4 -q /dev/vda2; mkswap /dev/vda3 >/dev/null
mount /dev/vda2 /mnt/t; mkdir -p /mnt/t/etc /mnt/t/boot/efi; mount /dev/vda1 /mnt/t/boot/efi
mkdir -p /mnt/t/boot/efi/EFI/debian; dd if=/dev/zero of=/mnt/t/boot/efi/EFI/debian/grubx64.efi bs=1M count=4 status=none
dd if=/dev/zero of=/mnt/t/big bs=1M count=100 status=none
u() { blkid -s UUID -o value "$1"; }
printf 'UUID=%s /boot/efi vfat umask=0077 0 1\nUUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s none swap sw 0 0\n' "$(u /dev/vda1)" "$(u /dev/vda2)" "$(u /dev/vda3)" > /mnt/t/etc/fstab
umount /mnt/t/boot/efi /mnt/t
`,
  uncarryable: `
set -e
sgdisk -n1:1M:+1M -t1:ef02 -n2:0:+1200M -t2:8300 -n3:0:+300M -t3:8309 -n4:0:+300M -t4:fd00 /dev/vda
sgdisk -n1:1M:+300M -t1:fd00 /dev/vdb
partprobe /dev/vda /dev/vdb; udevadm settle
mkfs.ext4 -q /dev/vda2
printf secret > /tmp/k
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /tmp/k /dev/vda3
mdadm --create /dev/md0 --run --quiet --level=1 --raid-devices=2 --metadata=1.2 /dev/vda4 /dev/vdb1
mkfs.ext4 -q /dev/md0
mount /dev/vda2 /mnt/t; mkdir -p /mnt/t/etc
u() { blkid -s UUID -o value "$1"; }
printf 'UUID=%s / ext4 errors=remount-ro 0 1\nUUID=%s /data ext4 defaults 0 2\n/dev/mapper/secret /secret ext4 noauto 0 0\n' "$(u /dev/vda2)" "$(u /dev/md0)" > /mnt/t/etc/fstab
umount /mnt/t
`,
} as const;

if (requirements(t, ['root', 'qemu', 'ovmf', 'ssh-keygen', 'unshare', 'setpriv'])) {
  t.test('inspect real machines (RAM OS under QEMU, BIOS and UEFI)', async (t) => {
    const image = await builtImage({ flavour: 'lean' });
    const imgDir = image.imageDir;
    const work = tempDir(t, 'inspect-vm');
    await runOk('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ramboot-test', '-f', join(work, 'id')]);
    const key = join(work, 'id');
    const pub = (await readFile(`${key}.pub`, 'utf8')).trim();
    if (WRITE) await mkdir(FIXTURES, { recursive: true });

    const boot = async (name: string, firmware: 'bios' | 'uefi', mac: string, sizes: string[]) => {
      const disks: string[] = [];
      for (const [i, size] of sizes.entries()) {
        const d = join(work, `${name}-${i}.raw`);
        await runOk('qemu-img', ['create', '-q', '-f', 'raw', d, size]);
        disks.push(d);
      }
      const seed = await startSeedServer(t, { hostname: `src-${name}`, sshKey: pub });
      const sshPort = await freePort();
      const started = Date.now();
      const vm = startQemu(t, {
        name: `inspect-${name}`,
        memoryMiB: Math.max(image.manifest.minRamMiB, 1024),
        smp: 2,
        firmware,
        kernel: join(imgDir, 'vmlinuz'),
        initrd: join(imgDir, 'initrd.img'),
        append: `${seedCmdline(image.manifest.cmdline, mac, seed.port)} panic=-1`,
        nics: [{ type: 'user', mac, hostfwd: [`tcp:127.0.0.1:${sshPort}-:22`], romfile: '' }],
        disks: disks.map((path) => ({ path, format: 'raw' as const })),
      });
      // Poll SSH until the seed's key is accepted (fail fast on a panic).
      for (;;) {
        if (Date.now() - started > 900_000) throw new Error(`${name}: no SSH after 900 s\n${vm.tail(30)}`);
        if (vm.seen(/Kernel panic|RAMBOOT-FATAL/)) throw new Error(`${name}: boot failed\n${vm.tail(30)}`);
        const r = await sshCommand(sshPort, key, 'true', 20_000);
        if (r.code === 0) break;
        await new Promise((r) => setTimeout(r, 500));
      }
      t.comment(`${name}: SSH up after ${Math.round((Date.now() - started) / 1000)} s`);
      const sh = async (script: string) => {
        const r = await sshCommand(sshPort, key, script, 600_000);
        if (r.code !== 0) throw new Error(`${name}: setup failed (${r.code}): ${r.stderr.slice(-2000)}`);
        return r.stdout;
      };
      const capture = async (fixture: string, mode: InspectMode) => {
        const t0 = Date.now();
        const r = await runInspect(sshPort, key, mode);
        t.comment(`${fixture}: inspected in ${((Date.now() - t0) / 1000).toFixed(1)} s (one SSH round trip, ${r.stdout.length} bytes)`);
        t.equal(r.code, 0, `${fixture}: the script exits 0 (${r.stderr.slice(-500)})`);
        if (WRITE) await writeFile(join(FIXTURES, `${fixture}.txt`), r.stdout);
        const inv = parseInspection(r.stdout);
        // The script leaves nothing behind on the inspected machine.
        t.equal((await sshCommand(sshPort, key, 'ls -d /tmp/ramboot-inspect.* 2>/dev/null; true')).stdout.trim(), '', `${fixture}: temp dir removed`);
        t.equal((await sshCommand(sshPort, key, "awk '$2 ~ \"^/tmp/ramboot-inspect\"' /proc/mounts")).stdout.trim(), '', `${fixture}: nothing left mounted`);
        return inv;
      };
      return { sh, capture };
    };

    const bios = async () => {
      const vm = await boot('bios', 'bios', '52:54:00:4a:21:01', ['3G', '2G']);
      await vm.sh(WIPE);
      const blank = await vm.capture('cold-bios-blank-2disks', 'cold');
      t.equal(blank.bootMode, 'bios');
      t.same(blank.disks.map((d) => [d.path, d.sizeBytes, d.table]), [['/dev/vda', 3 * 2 ** 30, null], ['/dev/vdb', 2 * 2 ** 30, null]], 'two blank disks');
      t.equal(blank.rootDevice, null, 'no root on blank disks');

      await vm.sh(SETUP['gpt-bios']);
      const g = await vm.capture('cold-gpt-bios', 'cold');
      t.equal(g.disks[0]?.table, 'gpt');
      t.same(g.disks[0]?.partitions.map((p) => p.role), ['bios-boot', 'data', 'data', 'swap']);
      t.equal(g.rootDevice, '/dev/vda2', 'root found by its fstab');
      t.same(g.fstab.map((e) => [e.file, e.device]), [['/', '/dev/vda2'], ['/home', '/dev/vda3'], ['none', '/dev/vda4'], ['/tmp', null]], 'fstab resolved');
      const root = g.disks[0]?.partitions[1]?.fs;
      t.ok(root?.usedBytes !== null && root!.usedBytes! > 100 * 2 ** 20, `used bytes measured read-only: ${root?.usedBytes}`);
      t.equal(root?.mountpoint, '/');

      // Live: /home and swap of that disk in use by the RAM OS.
      await vm.sh('mount /dev/vda3 /home && swapon /dev/vda4');
      const live = await vm.capture('live-ramos-home-swap', 'live');
      t.equal(live.mode, 'live');
      t.equal(live.swaps[0]?.device, '/dev/vda4', 'active swap');
      t.equal(live.disks[0]?.partitions[2]?.fs?.mountedAt, '/home', '/home mounted live');
      await vm.sh(WIPE);

      await vm.sh(SETUP.mbr);
      const m = await vm.capture('cold-mbr', 'cold');
      t.equal(m.disks[0]?.table, 'dos');
      t.same(m.disks[0]?.partitions.map((p) => [p.number, p.type, p.role]), [[1, '83', 'data'], [2, '05', 'extended'], [5, '82', 'swap'], [6, '83', 'data']]);
      t.equal(m.rootDevice, '/dev/vda1');
      await vm.sh(WIPE);

      await vm.sh(SETUP.lvm);
      const l = await vm.capture('cold-lvm', 'cold');
      t.equal(l.lvm.vgs[0]?.name, 'vg0');
      t.same(l.lvm.lvs.map((x) => [x.name, x.fs?.type]), [['home', 'xfs'], ['root', 'ext4'], ['swap', 'swap']]);
      t.equal(l.rootDevice, '/dev/vg0/root');
      await vm.sh(WIPE);

      await vm.sh(SETUP.uncarryable);
      const u = await vm.capture('cold-luks-md', 'cold');
      t.same(u.unsupported.map((x) => x.kind).sort(), ['luks', 'md-raid', 'md-raid', 'missing-device'], `uncarryable found: ${JSON.stringify(u.unsupported)}`);
    };

    const uefi = async () => {
      const vm = await boot('uefi', 'uefi', '52:54:00:4a:21:02', ['3G', '4G']);
      await vm.sh(WIPE);
      await vm.sh(SETUP.uefi);
      const e = await vm.capture('cold-uefi', 'cold');
      t.equal(e.bootMode, 'uefi');
      t.same(e.disks[0]?.partitions.map((p) => p.role), ['esp', 'data', 'swap']);
      t.equal(e.disks[0]?.partitions[0]?.fs?.type, 'vfat');
      t.equal(e.disks[0]?.partitions[0]?.fs?.mountpoint, '/boot/efi');
    };

    await Promise.all([bios(), uefi()]);
  });
}
