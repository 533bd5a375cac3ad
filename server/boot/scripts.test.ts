import t from 'tap';
import { parse } from 'yaml';
import type { Mac } from '../../common/mac.js';
import type { LoadedImage } from '../images/image-store.js';
import { machineRecordSchema } from '../machines/model.js';
import { bootstrapScript, kernelCmdline, machineScript } from './ipxe-scripts.js';
import { mergeCloudConfig, metaData, networkConfig, userData } from './cloud-config.js';
import { renderTemplate } from './templates.js';

const mac = '52:54:00:12:34:56' as Mac;
const image: LoadedImage = {
  name: 'default',
  dir: '/nonexistent',
  manifest: {
    schema: 1,
    name: 'default',
    kernel: 'vmlinuz',
    initrd: ['initrd.img', 'extra.img'],
    files: { vmlinuz: { sha256: 'a'.repeat(64), size: 1 }, 'initrd.img': { sha256: 'b'.repeat(64), size: 2 }, 'extra.img': { sha256: 'c'.repeat(64), size: 3 } },
    cmdline: 'console=ttyS0,115200 ramboot.root=@IMAGE_URL@/root.squashfs ramboot.server=@PUBLIC_URL@',
    minRamMiB: 512,
    packages: [],
    build: {},
  },
};
const machine = machineRecordSchema.parse({ mac, sshKeys: [] });
const ctx = { mac, hostname: 'web1', publicUrl: 'http://10.0.0.1:8080', kernelArgs: 'quiet', platform: 'pcbios' };

t.test('bootstrap chains to the per-MAC script with the machine facts', async (t) => {
  const s = bootstrapScript('http://10.0.0.1:8080');
  t.match(s, /^#!ipxe\n/);
  t.match(s, /chain .*http:\/\/10\.0\.0\.1:8080\/ipxe\?mac=\$\{netX\/mac:hexhyp\}&buildarch=\$\{buildarch:uristring\}&platform=\$\{platform:uristring\}&uuid=\$\{uuid:uristring\}&serial=\$\{serial:uristring\}&memsize=\$\{memsize\} \|\| goto failed/);
  t.match(s, /:failed\n.*\n.*sleep 10\nexit 1/, 'failure ends in a message and exit');
});

t.test('ramboot script: kernel, every initrd, seed on the command line, failure path', async (t) => {
  const s = machineScript({ kind: 'ramboot', mode: 'once', image, machine }, ctx, 'TOKEN1');
  t.match(s, /^#!ipxe\n/);
  t.match(s, /kernel http:\/\/10\.0\.0\.1:8080\/images\/default\/vmlinuz console=ttyS0,115200 ramboot\.root=http:\/\/10\.0\.0\.1:8080\/images\/default\/root\.squashfs ramboot\.server=http:\/\/10\.0\.0\.1:8080 quiet BOOTIF=01-52-54-00-12-34-56 ds=nocloud-net;s=http:\/\/10\.0\.0\.1:8080\/cloud-init\/52:54:00:12:34:56\/TOKEN1\/ \|\| goto failed/);
  t.match(s, /initrd --name initrd\.img http:\/\/10\.0\.0\.1:8080\/images\/default\/initrd\.img \|\| goto failed\ninitrd --name extra\.img http:\/\/10\.0\.0\.1:8080\/images\/default\/extra\.img \|\| goto failed\nboot \|\| goto failed/);
  t.notMatch(s, /initrd=initrd\.img/, 'no initrd= on BIOS');
  t.match(s, /:failed\necho .*\nsleep 10\nexit 1\n$/);
  const efi = kernelCmdline(image, { ...ctx, platform: 'efi' }, 'T');
  t.match(efi, / initrd=initrd\.img initrd=extra\.img$/, 'EFI needs initrd= for each initrd');
});

t.test('local and refusal scripts exit with a message', async (t) => {
  const l = machineScript({ kind: 'local', reason: 'is set to boot from its local disk' }, ctx, 'x');
  t.match(l, /echo ramboot: 52:54:00:12:34:56 is set to boot from its local disk[^]*\nexit 1\n$/);
  t.notMatch(l, /kernel|boot \|\|/);
  const r = machineScript({ kind: 'refuse', reason: 'this machine has 256 MiB of RAM but image default needs 512 MiB' }, ctx, 'x');
  t.match(r, /NOT BOOTING 52:54:00:12:34:56: this machine has 256 MiB/);
  t.match(r, /exit 1\n$/);
});

t.test('templates refuse values that would inject iPXE commands', async (t) => {
  t.throws(() => renderTemplate('local', { mac: 'x', reason: 'a\nchain http://evil' }), /newline/);
  t.throws(() => renderTemplate('local', { mac: '${net0/ip}', reason: 'r' }), /\$\{/);
  t.throws(() => renderTemplate('local', { mac: 'x' }), /no value/);
});

const rec = machineRecordSchema.parse({
  mac,
  hostname: 'web1.example.com',
  sshKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbvL8ighYfs//yjv8WiwyMRXYzjUB//TJzEvlr+OWle admin'],
  userData: { packages: ['htop'], ssh_authorized_keys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBbvL8ighYfs//yjv8WiwyMRXYzjUB//TJzEvlr+OWle other'], write_files: [{ path: '/etc/motd', content: 'hi' }], ssh_pwauth: true },
});

t.test('user-data: keys, hostname, phone_home, merged userData', async (t) => {
  const text = userData(rec, 'http://s/cloud-init/m/T/');
  t.match(text, /^#cloud-config\n/);
  const doc = parse(text) as Record<string, unknown>;
  t.equal(doc['hostname'], 'web1');
  t.equal(doc['fqdn'], 'web1.example.com');
  t.same(doc['ssh_authorized_keys'], [rec.sshKeys[0], (rec.userData['ssh_authorized_keys'] as string[])[0]], 'admin keys added after registered keys');
  t.same(doc['packages'], ['htop']);
  t.same(doc['users'], [], 'hardening (also): no distro default user; root by key is the one login');
  t.equal(doc['ssh_pwauth'], true, "admin's scalar wins");
  t.same(doc['phone_home'], { url: 'http://s/cloud-init/m/T/phone-home', post: ['pub_key_rsa', 'pub_key_ecdsa', 'pub_key_ed25519', 'instance_id', 'hostname', 'fqdn'], tries: 10 });
  t.equal(doc['disable_root'], false);
});

t.test('meta-data, network-config, merge rules', async (t) => {
  const md = parse(metaData(rec, 'abcdefghijkl')) as Record<string, string>;
  t.equal(md['instance-id'], 'ramboot-525400123456-abcdefgh');
  t.equal(md['local-hostname'], 'web1.example.com');
  const nc = parse(networkConfig()) as { version: number; ethernets: Record<string, { dhcp4: boolean }> };
  t.equal(nc.version, 2);
  t.ok(Object.values(nc.ethernets).every((e) => e.dhcp4));
  t.same(mergeCloudConfig({ a: { b: 1, c: [1] } }, { a: { c: [2], d: 3 } }), { a: { b: 1, c: [1, 2], d: 3 } });
});
