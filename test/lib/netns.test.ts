import t from 'tap';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirements } from './requirements.js';
import { ensureTestKernel } from './test-kernel.js';
import { buildBusyboxInitrd, DEFAULT_INITRD_MARKER } from './busybox-initrd.js';
import { startQemu } from './qemu.js';
import { createNetns } from './netns.js';
import { writeTestImage } from './test-image.js';
import { startRambootServer } from './ramboot-server.js';

// Self-test of netns.ts: in a namespace the test creates, QEMU's iPXE gets a DHCP lease from dnsmasq,
// fetches its script over HTTP from a server running in the namespace, and boots a kernel from it.

const MAC = '52:54:00:99:00:01';

t.test('iPXE in a test namespace: DHCP from dnsmasq, script + kernel over HTTP', async (t) => {
  if (!requirements(t, ['root', 'qemu', 'dnsmasq', 'busybox', 'ip', 'tun', 'unshare', 'nsenter', 'setpriv', 'apt-get', 'dpkg'])) {
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-netns-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await copyFile(await ensureTestKernel(), join(dir, 'vmlinuz'));
  await writeFile(join(dir, 'initrd.img'), buildBusyboxInitrd());

  const ns = await createNetns(t, { name: 'selftest', dhcp: { boot: { ipxe: 'http://10.99.0.1:8080/boot.ipxe' } } });
  const base = `http://${ns.address}:8080`;
  await writeFile(
    join(dir, 'boot.ipxe'),
    [
      '#!ipxe',
      'echo RAMBOOT-NETNS-SCRIPT-OK ip=${net0/ip} mac=${net0/mac}',
      `kernel ${base}/vmlinuz console=ttyS0,115200 panic=-1 netns.ip=\${net0/ip}`,
      `initrd ${base}/initrd.img`,
      'boot',
      '',
    ].join('\n'),
  );
  const httpd = ns.spawn('httpd', ['busybox', 'httpd', '-f', '-vv', '-p', `${ns.address}:8080`, '-h', dir]);
  await ns.waitForHttp(`${base}/boot.ipxe`);

  const vm = startQemu(t, {
    name: 'qemu-netns-selftest',
    wrap: ns.wrap,
    nics: [{ type: 'tap', ifname: ns.tap, mac: MAC }],
    memoryMiB: 512,
  });
  const s = await vm.waitFor(/RAMBOOT-NETNS-SCRIPT-OK ip=(\S+) mac=(\S+)/, { timeoutMs: 240_000 });
  t.match(s[1] ?? '', /^10\.99\.0\.1\d\d$/, 'iPXE got an address from the dnsmasq range');
  t.equal(s[2], MAC, 'NIC MAC as configured');
  const m = await vm.waitFor(new RegExp(`${DEFAULT_INITRD_MARKER} cmdline=(.*)$`), { timeoutMs: 240_000 });
  t.match(m[1] ?? '', new RegExp(`netns\\.ip=${(s[1] ?? '').replace(/\./g, '\\.')}( |$)`), 'kernel booted from the HTTP script');
  await vm.waitForExit(120_000);

  const dnsLog = ns.dnsmasq?.output() ?? '';
  t.match(dnsLog, new RegExp(`DHCPACK\\(br0\\) ${(s[1] ?? '').replace(/\./g, '\\.')} ${MAC}`), 'dnsmasq logged the lease');
  t.match(dnsLog, /tags: .*ipxe/, 'second DHCP request came from iPXE (user class tag)');
  t.match(httpd.output(), /GET \/vmlinuz|vmlinuz/, 'httpd served the kernel');
});

t.test('the real ramboot server inside the namespace: dnsmasq points iPXE at it, API through the namespace', async (t) => {
  if (!requirements(t, ['root', 'qemu', 'dnsmasq', 'busybox', 'ip', 'tun', 'unshare', 'nsenter', 'setpriv', 'apt-get', 'dpkg'])) {
    return;
  }
  const dataDir = await mkdtemp(join(tmpdir(), 'ramboot-netns-server-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  await writeTestImage(dataDir, 'test');
  // the namespace is private: a fixed port cannot collide with anyone
  const base = 'http://10.99.0.1:8080';
  const ns = await createNetns(t, { name: 'srvtest', dhcp: { boot: { ipxe: `${base}/boot.ipxe` } } });
  const srv = await startRambootServer(t, {
    dataDir,
    httpHost: ns.address,
    httpPort: 8080,
    publicUrl: base,
    wrap: ns.wrap,
  });
  const mac = '52:54:00:99:00:02';
  const put = await srv.api('PUT', `/api/v1/machines/${mac}`, { hostname: 'ns1', sshKeys: [], boot: 'ramboot', image: 'test' });
  t.equal(put.status, 201, `PUT through the namespace -> ${put.status}`);
  const vm = startQemu(t, { name: 'qemu-netns-server', wrap: ns.wrap, nics: [{ type: 'tap', ifname: ns.tap, mac }] });
  const m = await vm.waitFor(new RegExp(`${DEFAULT_INITRD_MARKER} cmdline=(.*)$`), { timeoutMs: 300_000 });
  t.match(m[1] ?? '', `ds=nocloud-net;s=${base}/cloud-init/${mac}/`, 'booted through the server in the namespace');
  await vm.waitForExit(120_000);
});
