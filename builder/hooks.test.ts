// The build-time hooks, run through the real runner against minimal fake Debian roots.
import t, { type Test } from 'tap';
import { existsSync, lstatSync, readlinkSync, rmSync, statSync, symlinkSync, chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { runHooks, hooksDir, fixesDir, HookError, listHooks } from './hooks.js';
import { silentLogger } from '../common/log.js';
import { makeTree, read, snapshot, type TreeSpec } from '../test/lib/test-tree.js';
import { tempDir } from '../test/lib/temp-dir.js';

const SSHD_CONFIG = `# Debian's sshd_config (excerpt)
Include /etc/ssh/sshd_config.d/*.conf
#PermitRootLogin prohibit-password
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
`;

/** cloud-init 22.4's unit as Debian ships it (excerpt: the ordering lines that matter). */
const CLOUD_INIT_SERVICE = `[Unit]
Description=Initial cloud-init job (metadata service crawler)
DefaultDependencies=no
Wants=cloud-init-local.service
Wants=sshd-keygen.service
Wants=sshd.service
After=cloud-init-local.service
After=systemd-networkd-wait-online.service
Before=network-online.target
Before=sshd-keygen.service
Before=sshd.service
Before=sysinit.target

[Service]
Type=oneshot
ExecStart=/usr/bin/cloud-init init
RemainAfterExit=yes

[Install]
WantedBy=cloud-init.target
`;

/** What mmdebstrap leaves that the hooks touch, including the traps (absolute symlinks). */
function debianRoot(extra: TreeSpec = {}): TreeSpec {
  return {
    'etc/passwd': 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n',
    'etc/shadow': 'root::19700:0:99999:7:::\ndaemon:*:19700:0:99999:7:::\n',
    'etc/ssh/sshd_config': SSHD_CONFIG,
    'etc/ssh/sshd_config.d': { dir: true },
    'etc/ssh/ssh_host_rsa_key': 'PRIVATE RSA\n',
    'etc/ssh/ssh_host_rsa_key.pub': 'ssh-rsa AAAA build\n',
    'etc/ssh/ssh_host_ed25519_key': 'PRIVATE ED25519\n',
    'etc/ssh/ssh_host_ed25519_key.pub': 'ssh-ed25519 AAAA build\n',
    'etc/ssh/ssh_host_ecdsa_key': 'PRIVATE ECDSA\n',
    'etc/ssh/ssh_host_ecdsa_key.pub': 'ecdsa-sha2-nistp256 AAAA build\n',
    'etc/fstab': '# UNCONFIGURED FSTAB FOR BASE SYSTEM\n',
    'etc/machine-id': '0123456789abcdef0123456789abcdef\n',
    'var/lib/dbus/machine-id': { link: '/etc/machine-id' },
    'var/lib/systemd/random-seed': 'seed',
    'var/run': { link: '/run' },
    'var/log/journal/abc/system.journal': 'journal',
    'etc/hostname': 'buildhost\n',
    'etc/hosts': '127.0.0.1\tlocalhost\n127.0.1.1\tbuildhost\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\n',
    'etc/resolv.conf': 'nameserver 192.0.2.53\n',
    'etc/lvm/lvmlocal.conf': 'local {\n}\n',
    'etc/mdadm': { dir: true },
    'etc/systemd/system': { dir: true },
    'usr/lib/systemd/system/ssh.service': '[Unit]\nDescription=OpenBSD Secure Shell server\nAfter=network.target auditd.service\n\n[Service]\nType=notify\nRuntimeDirectory=sshd\n\n[Install]\nAlias=sshd.service\n',
    'usr/bin/curl': '',
    lib: { link: 'usr/lib' },
    ...extra,
  };
}

async function hookedRoot(tt: Pick<Test, 'teardown'>, extra: TreeSpec = {}): Promise<string> {
  const root = tempDir(tt, 'hooks');
  makeTree(root, debianRoot(extra));
  await runHooks(root, { logger: silentLogger() });
  return root;
}

function linkOf(root: string, rel: string): string {
  const p = join(root, rel);
  if (!lstatSync(p, { throwIfNoEntry: false })?.isSymbolicLink()) throw new Error(`${rel} is not a symlink`);
  return readlinkSync(p);
}

t.test('the shipped hooks are all executable NN-name files and the runner finds them', async (t) => {
  const names = await listHooks(hooksDir());
  t.ok(names.length >= 10, `found ${names.join(' ')}`);
  t.same(names, [...names].sort(), 'lexical order');
  t.ok(existsSync(join(fixesDir(), 'ramboot-fix')), 'fixesDir() holds ramboot-fix');
});

t.test('all hooks against a fake Debian root', async (t) => {
  const root = await hookedRoot(t, {
    'usr/lib/systemd/systemd-resolved': '',
    'etc/cloud/cloud.cfg': 'users: [default]\n',
    'usr/lib/systemd/system/cloud-init.service': CLOUD_INIT_SERVICE,
  });

  t.test('fstab: proc and tmpfs only', async (t) => {
    const lines = read(root, 'etc/fstab').split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#'));
    t.same(lines.map((l) => l.split(/\s+/).slice(0, 3)), [
      ['proc', '/proc', 'proc'],
      ['tmpfs', '/tmp', 'tmpfs'],
    ]);
  });

  t.test('root password locked, never empty; /etc/shadow keeps its mode', async (t) => {
    const rootLine = read(root, 'etc/shadow').split('\n').find((l) => l.startsWith('root:'));
    const pw = rootLine?.split(':')[1] ?? '';
    t.not(pw, '', 'not empty');
    t.match(pw, /^[!*]/, 'locked');
    t.match(read(root, 'etc/shadow'), /^daemon:\*:/m, 'other accounts untouched');
    t.equal(read(root, 'etc/passwd').split('\n')[0], 'root:x:0:0:root:/root:/bin/bash');
    t.equal(statSync(join(root, 'etc/shadow')).mode & 0o777, 0o640);
  });

  t.test('sshd: key-only drop-in, included by sshd_config', async (t) => {
    const conf = read(root, 'etc/ssh/sshd_config.d/00-ramboot.conf');
    t.match(conf, /^PermitRootLogin prohibit-password$/m);
    t.match(conf, /^PasswordAuthentication no$/m);
    t.match(conf, /^KbdInteractiveAuthentication no$/m);
    t.match(conf, /^HostKey \/etc\/ssh\/ssh_host_ed25519_key$/m);
    t.match(conf, /^HostKey \/etc\/ssh\/ssh_host_ecdsa_key$/m);
    t.notMatch(conf, /rsa/i);
    t.equal(read(root, 'etc/ssh/sshd_config'), SSHD_CONFIG, 'sshd_config already had the Include: unchanged');
  });

  t.test('no SSH host keys shipped; generated at boot before sshd', async (t) => {
    for (const k of ['rsa', 'ed25519', 'ecdsa']) {
      t.notOk(existsSync(join(root, `etc/ssh/ssh_host_${k}_key`)), `${k} key removed`);
      t.notOk(existsSync(join(root, `etc/ssh/ssh_host_${k}_key.pub`)), `${k} pub removed`);
    }
    const unit = read(root, 'etc/systemd/system/ramboot-ssh-hostkeys.service');
    t.match(unit, /^Before=.*\bssh\.service\b/m);
    t.match(unit, /^Before=.*\bcloud-init\.service\b/m, 'before cloud-init, which keeps them (ssh_deletekeys: false)');
    t.match(unit, /^DefaultDependencies=no$/m, 'early: not after sysinit.target');
    t.notMatch(unit, /^After=.*cloud-init/m);
    t.notMatch(unit, /^After=/m, 'waits for nothing (the root is writable from the start)');
    t.match(unit, /^ConditionPathExists=\|!\/etc\/ssh\/ssh_host_ed25519_key$/m, 'skipped when /init made the keys');
    t.match(unit, /^ConditionPathExists=\|!\/etc\/ssh\/ssh_host_ecdsa_key$/m);
    t.match(unit, /^ExecStart=\/usr\/local\/sbin\/ramboot-ssh-hostkeys$/m);
    t.equal(linkOf(root, 'etc/systemd/system/multi-user.target.wants/ramboot-ssh-hostkeys.service'), '/etc/systemd/system/ramboot-ssh-hostkeys.service');
    t.equal(linkOf(root, 'etc/systemd/system/ssh.service.wants/ramboot-ssh-hostkeys.service'), '/etc/systemd/system/ramboot-ssh-hostkeys.service');
    t.equal(statSync(join(root, 'usr/local/sbin/ramboot-ssh-hostkeys')).mode & 0o777, 0o755);
  });

  t.test('sshd starts once its host keys exist: not after sysinit.target, cloud-init or the seed', async (t) => {
    const dropIn = read(root, 'etc/systemd/system/ssh.service.d/10-ramboot-early.conf');
    t.match(dropIn, /^DefaultDependencies=no$/m);
    t.match(dropIn, /^After=.*\bramboot-ssh-hostkeys\.service\b/m);
    t.match(dropIn, /^Wants=ramboot-ssh-hostkeys\.service$/m);
    t.match(dropIn, /^Conflicts=shutdown\.target$/m, 'still stopped at shutdown');
    t.notMatch(dropIn, /local-fs/, 'not after local-fs.target');
    t.notMatch(dropIn, /ramboot-nocloud|cloud-init|sysinit/, 'authorized_keys are read at login: no wait for the seed');
    t.match(dropIn, /^\[Service\]\n(#.*\n)*ExecStartPre=$/m, 'no separate sshd -t start');
    t.notMatch(dropIn, /tmpfiles/, 'no wait for systemd-tmpfiles-setup (RuntimeDirectory makes /run/sshd)');
    t.match(dropIn, /^Type=forking$/m, 'sshd forks: /init\'s early sshd can be adopted');
    t.match(dropIn, /^PIDFile=\/run\/sshd\.pid$/m);
    t.match(dropIn, /^ExecStart=\nExecStart=\/usr\/local\/lib\/ramboot\/ramboot-sshd$/m, 'ramboot-sshd adopts or starts sshd');
    t.equal(statSync(join(root, 'usr/local/lib/ramboot/ramboot-sshd')).mode & 0o777, 0o755);
    t.match(read(root, 'etc/ssh/sshd_config.d/00-ramboot.conf'), /^PidFile \/run\/sshd\.pid$/m, 'sshd writes the pid file the unit reads');
    const unit = read(root, 'etc/systemd/system/ssh.service');
    t.match(unit, /^After=auditd\.service$/m, 'the packaged unit, copied without After=network.target');
    t.notMatch(unit, /^After=.*network\.target/m);
    t.match(unit, /^RuntimeDirectory=sshd$/m, 'the rest kept');
  });

  t.test('root\'s keys from the seed as soon as there is an address, in the cloud flavour too', async (t) => {
    const unit = read(root, 'etc/systemd/system/ramboot-nocloud.service');
    t.match(unit, /^ExecStart=\/usr\/local\/lib\/ramboot\/ramboot-nocloud keys$/m);
    t.match(unit, /^DefaultDependencies=no$/m);
    t.match(unit, /^Wants=systemd-networkd\.service$/m, 'networkd started with it');
    t.notMatch(unit, /^After=.*systemd-networkd\.service/m, 'not ordered after networkd: /init\'s early network may have an address already');
    t.notMatch(unit, /network-online|wait-online/);
    t.match(unit, /^Before=ramboot-report-sshd\.service\b/m, 'sshd.ready is reported once the keys are in place');
    t.match(unit, /^ConditionPathExists=!\/run\/ramboot\/early-seed-keys$/m, 'skipped when /init read the seed');
    t.equal(linkOf(root, 'etc/systemd/system/multi-user.target.wants/ramboot-nocloud.service'), '/etc/systemd/system/ramboot-nocloud.service');
    t.notOk(existsSync(join(root, 'etc/systemd/system/ramboot-nocloud-phone-home.service')), 'cloud-init phones home');
    for (const f of ['ramboot-nocloud', 'ramboot-seed-url']) t.equal(statSync(join(root, 'usr/local/lib/ramboot', f)).mode & 0o777, 0o755, f);
  });

  t.test('cloud-init runs after sshd, at a low CPU weight, and no longer holds anything back', async (t) => {
    const unit = read(root, 'etc/systemd/system/cloud-init.service');
    t.match(unit, /^# ramboot: \/usr\/lib\/systemd\/system\/cloud-init\.service without the sshd ordering/m);
    t.notMatch(unit, /^(Before|Wants)=.*sshd/m, 'no Before=/Wants= sshd (ssh.service\'s alias)');
    t.match(unit, /^Before=sysinit\.target$/m, 'the rest of the packaged unit is kept');
    t.match(unit, /^ExecStart=\/usr\/bin\/cloud-init init$/m);
    const dropIn = read(root, 'etc/systemd/system/cloud-init.service.d/10-ramboot-after-ssh.conf');
    t.match(dropIn, /^After=ramboot-nocloud\.service ssh\.service$/m);
    t.match(dropIn, /^CPUWeight=20$/m);
    t.equal(linkOf(root, 'etc/systemd/system/cloud-init-local.service'), '/dev/null', 'init-local masked (nothing to find, held networkd back)');
    t.equal(linkOf(root, 'etc/systemd/system-generators/cloud-init-generator'), '/dev/null', 'no ds-identify run at every boot');
    t.equal(linkOf(root, 'etc/systemd/system/multi-user.target.wants/cloud-init.target'), '/lib/systemd/system/cloud-init.target', 'enabled statically');
    t.match(read(root, 'etc/tmpfiles.d/ramboot-cloud-init.conf'), /^f \/run\/cloud-init\/enabled /m, 'cloud-init status still says enabled');
  });

  t.test('systemd: no generators or first-boot work with nothing to do', async (t) => {
    for (const g of ['systemd-cryptsetup-generator', 'systemd-sysv-generator', 'systemd-rc-local-generator', 'systemd-run-generator']) {
      t.equal(linkOf(root, `etc/systemd/system-generators/${g}`), '/dev/null', g);
    }
    t.notOk(lstatSync(join(root, 'etc/systemd/system-generators/systemd-fstab-generator'), { throwIfNoEntry: false }), 'fstab generator kept (tmpfs /tmp)');
    t.notOk(lstatSync(join(root, 'etc/systemd/system-generators/systemd-getty-generator'), { throwIfNoEntry: false }), 'getty generator kept');
    for (const d of ['etc', 'var']) t.ok(existsSync(join(root, d, '.updated')), `${d}/.updated: ConditionNeedsUpdate= units skip`);
    for (const u of ['systemd-binfmt.service', 'proc-sys-fs-binfmt_misc.automount']) t.equal(linkOf(root, `etc/systemd/system/${u}`), '/dev/null', `${u} masked`);
    for (const u of ['modprobe@drm.service', 'modprobe@efi_pstore.service', 'systemd-pstore.service', 'modprobe@configfs.service', 'sys-kernel-config.mount', 'systemd-random-seed.service']) {
      t.equal(linkOf(root, `etc/systemd/system/${u}`), '/dev/null', `${u} masked (early work with nothing to do)`);
    }
  });

  t.test('getty on ttyS0 and tty1', async (t) => {
    t.equal(linkOf(root, 'etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service'), '/lib/systemd/system/serial-getty@.service');
    t.equal(linkOf(root, 'etc/systemd/system/getty.target.wants/getty@tty1.service'), '/lib/systemd/system/getty@.service');
  });

  t.test('networkd: DHCP on every Ethernet NIC, client id = MAC, resolved for DNS', async (t) => {
    const net = read(root, 'etc/systemd/network/90-ramboot-ethernet.network');
    const match = net.slice(net.indexOf('[Match]'), net.indexOf('[Network]'));
    t.match(match, /^Type=ether$/m);
    t.notMatch(match, /^(Name|MACAddress)=/m, 'not tied to a name or MAC');
    t.match(net, /^KeepConfiguration=static$/m, 'keeps the lease /init put on the boot NIC while its own DHCP takes over');
    t.match(net, /^DHCP=yes$/m);
    t.match(net, /\[DHCPv4\]\nClientIdentifier=mac$/m);
    t.equal(linkOf(root, 'etc/systemd/system/multi-user.target.wants/systemd-networkd.service'), '/lib/systemd/system/systemd-networkd.service');
    t.equal(linkOf(root, 'etc/systemd/system/network-online.target.wants/systemd-networkd-wait-online.service'), '/lib/systemd/system/systemd-networkd-wait-online.service');
    t.match(read(root, 'etc/systemd/system/systemd-networkd-wait-online.service.d/ramboot.conf'), /--any/);
    t.equal(linkOf(root, 'etc/systemd/system/multi-user.target.wants/systemd-resolved.service'), '/lib/systemd/system/systemd-resolved.service');
    t.equal(linkOf(root, 'etc/resolv.conf'), '../run/systemd/resolve/stub-resolv.conf');
  });

  t.test('cloud-init: root gets the keys, no passwords, no RSA, no network or disk handling', async (t) => {
    const cfg = parseYaml(read(root, 'etc/cloud/cloud.cfg.d/99-ramboot.cfg')) as Record<string, unknown>;
    t.equal(cfg['disable_root'], false);
    t.notOk('ssh_pwauth' in cfg, 'passwords stay off through the sshd drop-in');
    t.equal(read(root, 'etc/ssh/sshd_config.d/50-cloud-init.conf'), 'PasswordAuthentication no\n', "cloud-init's ssh_pwauth: false finds nothing to change: no sshd restart");
    t.equal(statSync(join(root, 'etc/ssh/sshd_config.d/50-cloud-init.conf')).mode & 0o777, 0o600);
    t.same(cfg['grub_dpkg'], { enabled: false });
    t.equal(cfg['locale'], 'false', 'cc_locale skipped (is_false)');
    t.same(cfg['ssh_genkeytypes'], ['ed25519', 'ecdsa']);
    t.equal(cfg['ssh_deletekeys'], false, 'the host keys sshd started with are kept');
    t.same(cfg['datasource_list'], ['NoCloud', 'None']);
    t.same(cfg['growpart'], { mode: 'off' });
    t.equal(cfg['resize_rootfs'], false);
    const net = parseYaml(read(root, 'etc/cloud/cloud.cfg.d/99-ramboot-network.cfg')) as Record<string, unknown>;
    t.same(net['network'], { config: 'disabled' });
  });

  t.test('fix scripts installed', async (t) => {
    t.equal(linkOf(root, 'usr/local/sbin/ramboot-fix'), '../lib/ramboot/fixes/ramboot-fix');
    for (const f of ['ramboot-fix', '10-fstab', 'fstab.awk', 'fixlib.sh']) {
      t.ok(existsSync(join(root, 'usr/local/lib/ramboot/fixes', f)), f);
    }
    t.equal(statSync(join(root, 'usr/local/lib/ramboot/fixes/10-fstab')).mode & 0o777, 0o755);
    t.notOk(existsSync(join(root, 'usr/local/lib/ramboot/fixes/fixes.test.ts')), 'tests stay in the repository');
    t.notOk(existsSync(join(root, 'usr/local/lib/ramboot/fixes/fixtures')), 'fixtures stay in the repository');
  });

  t.test('progress events service', async (t) => {
    t.equal(linkOf(root, 'usr/local/sbin/ramboot-report'), '../lib/ramboot/ramboot-report');
    for (const f of ['ramboot-report', 'ramboot-seed-url', 'ramboot-report-boot', 'ramboot-report-hostkeys']) {
      t.equal(statSync(join(root, 'usr/local/lib/ramboot', f)).mode & 0o777, 0o755, f);
    }
    for (const [unit, arg] of [['ramboot-report-booted.service', 'booted'], ['ramboot-report-sshd.service', 'sshd']] as const) {
      const text = read(root, `etc/systemd/system/${unit}`);
      t.match(text, /^Type=exec$/m, `${unit} never blocks the boot`);
      t.match(text, /^After=systemd-networkd-wait-online\.service/m, 'network up, without waiting for cloud-init (network-online.target does)');
      t.match(text, /^DefaultDependencies=no$/m);
      t.match(text, /^CPUWeight=20$/m, 'background work: sshd and the first login get the CPU first');
      t.match(text, new RegExp(`^ExecStart=/usr/local/lib/ramboot/ramboot-report-boot ${arg}$`, 'm'));
      t.notMatch(text, /^Before=(?!shutdown\.target$)/m, `${unit}: nothing waits for it`);
      t.equal(linkOf(root, `etc/systemd/system/multi-user.target.wants/${unit}`), `/etc/systemd/system/${unit}`);
    }
    t.match(read(root, 'etc/systemd/system/ramboot-report-sshd.service'), /^After=.*\bssh\.service\b/m);
    const keys = read(root, 'etc/systemd/system/ramboot-report-hostkeys.service');
    t.match(keys, /^After=ssh\.service ramboot-nocloud\.service$/m, 'host keys reported once sshd runs and the seed was reachable');
    t.notMatch(keys, /wait-online|network-online|CPUWeight/, 'not behind network-online, normal CPU weight: on the way to the verified login');
    t.match(keys, /^ExecStart=\/usr\/local\/lib\/ramboot\/ramboot-report-hostkeys$/m);
    t.match(keys, /^ConditionPathExists=!\/run\/ramboot\/early-host-keys$/m, 'skipped when /init reported them');
    t.equal(linkOf(root, 'etc/systemd/system/multi-user.target.wants/ramboot-report-hostkeys.service'), '/etc/systemd/system/ramboot-report-hostkeys.service');
  });

  t.test('hostname fallback', async (t) => {
    t.equal(read(root, 'etc/hostname'), 'ramboot\n');
    const hosts = read(root, 'etc/hosts');
    t.notMatch(hosts, /buildhost/, 'no trace of the build host');
    t.match(hosts, /^127\.0\.0\.1\tlocalhost$/m);
    t.match(hosts, /^ff02::1\tip6-allnodes$/m, 'other lines kept');
    t.match(read(root, 'etc/systemd/system/ramboot-hostname.service'), /^Before=.*systemd-networkd\.service/m);
    t.match(read(root, 'etc/systemd/system/ramboot-hostname.service'), /^ConditionHost=ramboot$/m, 'only while the placeholder name is set (/init usually sets the fallback)');
    t.notMatch(read(root, 'etc/systemd/system/ramboot-hostname.service'), /udev/, 'networkd does not wait for udev\'s coldplug through it (BOOTIF= names the MAC)');
    t.equal(linkOf(root, 'etc/systemd/system/sysinit.target.wants/ramboot-hostname.service'), '/etc/systemd/system/ramboot-hostname.service');
  });

  t.test('machine-id empty, generated per boot; no shared random seed', async (t) => {
    t.equal(read(root, 'etc/machine-id'), '');
    t.equal(linkOf(root, 'var/lib/dbus/machine-id'), '../../../etc/machine-id', 'relative link, inside the root');
    t.notOk(existsSync(join(root, 'var/lib/systemd/random-seed')));
    t.equal(linkOf(root, 'etc/systemd/system/systemd-firstboot.service'), '/dev/null');
  });

  t.test('RAM only: volatile journal, no swap, no fsck, no disk auto-activation', async (t) => {
    t.match(read(root, 'etc/systemd/journald.conf.d/90-ramboot.conf'), /^Storage=volatile$/m);
    t.notOk(existsSync(join(root, 'var/log/journal')), 'no persistent journal dir');
    for (const u of ['swap.target', 'systemd-fsck-root.service', 'udisks2.service', 'apt-daily.timer']) {
      t.equal(linkOf(root, `etc/systemd/system/${u}`), '/dev/null', `${u} masked`);
    }
    t.equal(linkOf(root, 'etc/systemd/system-generators/systemd-gpt-auto-generator'), '/dev/null');
    t.match(read(root, 'etc/lvm/lvmlocal.conf'), /auto_activation_volume_list = \[\]/);
    t.match(read(root, 'etc/mdadm/mdadm.conf'), /^AUTO -all$/m);
  });

  t.test('a second run changes nothing (idempotent)', async (t) => {
    const before = snapshot(root);
    await runHooks(root, { logger: silentLogger() });
    t.same(snapshot(root), before);
  });
});

t.test('lean root (no cloud-init, no resolved): hooks adapt, no host resolver shipped', async (t) => {
  const root = await hookedRoot(t);
  t.notOk(existsSync(join(root, 'etc/cloud')), 'no cloud-init config created');
  const unit = read(root, 'etc/systemd/system/ramboot-nocloud.service');
  t.match(unit, /^ExecStart=\/usr\/local\/lib\/ramboot\/ramboot-nocloud keys$/m, 'the same seed reader for the keys');
  t.notMatch(unit, /^Before=.*\bssh\.service/m, 'sshd does not wait for it');
  t.equal(linkOf(root, 'etc/systemd/system/multi-user.target.wants/ramboot-nocloud.service'), '/etc/systemd/system/ramboot-nocloud.service');
  const phone = read(root, 'etc/systemd/system/ramboot-nocloud-phone-home.service');
  t.match(phone, /^ExecStart=\/usr\/local\/lib\/ramboot\/ramboot-nocloud phone-home$/m, 'no cloud-init: the reader phones home');
  t.match(phone, /^After=ramboot-nocloud\.service ssh\.service ramboot-report-hostkeys\.service$/m, '"ready" only once sshd is up');
  t.match(phone, /^CPUWeight=20$/m, 'background work');
  t.equal(linkOf(root, 'etc/systemd/system/multi-user.target.wants/ramboot-nocloud-phone-home.service'), '/etc/systemd/system/ramboot-nocloud-phone-home.service');
  t.notOk(existsSync(join(root, 'etc/systemd/system/cloud-init.service')), 'no cloud-init unit written');
  t.notOk(lstatSync(join(root, 'etc/systemd/system-generators/cloud-init-generator'), { throwIfNoEntry: false }), 'no cloud-init generator mask');
  t.ok(existsSync(join(root, 'usr/local/lib/ramboot/ramboot-seed-url')));
  t.notOk(lstatSync(join(root, 'etc/resolv.conf')).isSymbolicLink());
  t.notMatch(read(root, 'etc/resolv.conf'), /192\.0\.2\.53/, 'build host resolver removed');
  const before = snapshot(root);
  await runHooks(root, { logger: silentLogger() });
  t.same(snapshot(root), before, 'idempotent');
});

t.test('an existing root password hash is disabled, not kept usable', async (t) => {
  const root = await hookedRoot(t, { 'etc/shadow': 'root:$6$salt$hash:19700:0:99999:7:::\n' });
  t.match(read(root, 'etc/shadow'), /^root:!\$6\$salt\$hash:/);
});

t.test('sshd_config without the Include gets it at the top', async (t) => {
  const root = await hookedRoot(t, { 'etc/ssh/sshd_config': 'PermitRootLogin yes\nPasswordAuthentication yes\n' });
  t.equal(
    read(root, 'etc/ssh/sshd_config'),
    'Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin yes\nPasswordAuthentication yes\n',
    'Include first: the drop-in wins (sshd keeps the first value it reads)',
  );
});

t.test('cloud-init without its packaged unit: the build fails, naming the cause', async (t) => {
  const root = tempDir(t, 'hooks');
  makeTree(root, debianRoot({ 'etc/cloud/cloud.cfg': 'users: [default]\n' }));
  await t.rejects(runHooks(root, { logger: silentLogger() }), /hook 45-cloud-init failed .*cloud-init\.service is not/);
});

t.test('hooks never write outside the root through an absolute symlink', async (t) => {
  const outside = tempDir(t, 'outside');
  makeTree(outside, { sshd_config: SSHD_CONFIG, ssh_host_ed25519_key: 'HOST KEY\n' });
  const before = snapshot(outside);
  const root = tempDir(t, 'hooks');
  makeTree(root, debianRoot());
  rmSync(join(root, 'etc/ssh'), { recursive: true });
  symlinkSync(outside, join(root, 'etc/ssh'));
  await t.rejects(runHooks(root, { logger: silentLogger() }), /hook 20-sshd failed .*resolves outside the root/);
  t.same(snapshot(outside), before, 'nothing outside the root was touched');
});

t.test('runner: order, argv, environment, progress', async (t) => {
  const dir = tempDir(t, 'hookdir');
  const root = tempDir(t, 'root');
  const hook = (name: string, body: string): void => {
    writeFileSync(join(dir, name), `#!/bin/sh\nset -eu\n${body}\n`);
    chmodSync(join(dir, name), 0o755);
  };
  hook('20-second', 'echo "20 $# $1 $EXTRA" >> "$1/log"');
  hook('10-first', 'echo "10 $RAMBOOT_FIXES_DIR" >> "$1/log"');
  writeFileSync(join(dir, 'README.md'), 'not a hook');
  writeFileSync(join(dir, 'helper.sh'), 'not a hook either');
  const progress: string[] = [];
  await runHooks(root, {
    hooksDir: dir,
    env: { EXTRA: 'x y;$(z)' },
    logger: silentLogger(),
    onProgress: (h, i, n) => progress.push(`${h} ${i}/${n}`),
  });
  t.equal(read(root, 'log'), `10 ${fixesDir()}\n20 1 ${root} x y;$(z)\n`, 'lexical order, root as the only argument, env passed verbatim');
  t.same(progress, ['10-first 0/2', '20-second 1/2']);
});

t.test('runner: a failing hook fails the build with its name and stderr; later hooks do not run', async (t) => {
  const dir = tempDir(t, 'hookdir');
  const root = tempDir(t, 'root');
  writeFileSync(join(dir, '10-bad'), '#!/bin/sh\necho "something broke: no such file" >&2\nexit 3\n');
  writeFileSync(join(dir, '20-after'), '#!/bin/sh\ntouch "$1/ran"\n');
  chmodSync(join(dir, '10-bad'), 0o755);
  chmodSync(join(dir, '20-after'), 0o755);
  const err = await runHooks(root, { hooksDir: dir, logger: silentLogger() }).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof HookError, 'HookError');
  if (err instanceof HookError) {
    t.equal(err.hook, '10-bad');
    t.equal(err.exitCode, 3);
    t.match(err.message, /hook 10-bad failed \(exit 3\): something broke: no such file/);
  }
  t.notOk(existsSync(join(root, 'ran')));
});

t.test('runner: a hung hook is killed after the timeout', async (t) => {
  const dir = tempDir(t, 'hookdir');
  const root = tempDir(t, 'root');
  writeFileSync(join(dir, '10-hang'), '#!/bin/sh\nexec sleep 60\n');
  chmodSync(join(dir, '10-hang'), 0o755);
  await t.rejects(runHooks(root, { hooksDir: dir, logger: silentLogger(), timeoutMs: 300 }), /hook 10-hang failed \(timed out after 300 ms\)/);
});

t.test('runner: bad input is refused before anything runs', async (t) => {
  const dir = tempDir(t, 'hookdir');
  const root = tempDir(t, 'root');
  writeFileSync(join(dir, '10-ok'), '#!/bin/sh\ntouch "$1/ran"\n');
  chmodSync(join(dir, '10-ok'), 0o755);
  writeFileSync(join(dir, '20-not-executable'), '#!/bin/sh\n');
  const logger = silentLogger();
  await t.rejects(runHooks(root, { hooksDir: dir, logger }), /20-not-executable .*not executable/);
  t.notOk(existsSync(join(root, 'ran')), 'nothing ran');
  chmodSync(join(dir, '20-not-executable'), 0o755);
  await t.rejects(runHooks('relative/root', { hooksDir: dir, logger }), /absolute path/);
  await t.rejects(runHooks(join(root, 'missing'), { hooksDir: dir, logger }), /does not exist/);
  await t.rejects(runHooks('/', { hooksDir: dir, logger }), /refusing .* host root/);
  await t.rejects(runHooks(root, { hooksDir: dir, logger, env: { 'BAD NAME': 'x' } }), /invalid environment variable name/);
  t.notOk(existsSync(join(root, 'ran')), 'still nothing ran');
});

t.test('a hook called by hand refuses a bad root', async (t) => {
  const { spawnSync } = await import('node:child_process');
  for (const args of [[], ['relative'], ['/'], ['/nonexistent-ramboot-root'], ['/tmp', 'extra']]) {
    const r = spawnSync(join(hooksDir(), '10-fstab'), args, { encoding: 'utf8' });
    t.equal(r.status, 1, `${JSON.stringify(args)} refused`);
    t.match(r.stderr, /10-fstab: error:/);
  }
});
