import t, { type Test } from 'tap';
import { tempDir } from './lib/temp-dir.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requirements } from './lib/requirements.js';
import { writeTestImage } from './lib/test-image.js';
import { DEFAULT_INITRD_MARKER } from './lib/busybox-initrd.js';
import { startQemu } from './lib/qemu.js';
import { createNetns } from './lib/netns.js';
import { startRambootServer, type LogLine } from './lib/ramboot-server.js';

// Real firmware against ramboot's TFTP server, in a network namespace made here (bridge + tap + dnsmasq
// as the site's DHCP, DHCP only): `ramboot serve` listens for TFTP on the bridge address, port 69.
//  - UEFI: OVMF's own EDK2 PXE (the NIC's iPXE ROM disabled) fetches snponly.efi over TFTP; that iPXE
//    chains to ramboot's HTTP and boots the test image.
//  - BIOS: SeaBIOS runs QEMU's iPXE NIC ROM, which chains undionly.kpxe over TFTP; undionly's iPXE then
//    chains to ramboot's HTTP. Which iPXE is asking is decided by a two-line stage-0 script (served by
//    busybox httpd in the namespace): the ROM's NIC driver is "virtio-net", undionly's is not.

const BASE = 'http://10.99.0.1:8080';
const STAGE0 = 'http://10.99.0.1:8081/stage0.ipxe';
const MARKER_RE = new RegExp(`${DEFAULT_INITRD_MARKER} cmdline=(.*)$`);
const REQS = ['root', 'qemu', 'ovmf', 'ipxe', 'dnsmasq', 'busybox', 'ip', 'tun', 'unshare', 'nsenter', 'setpriv', 'apt-get', 'dpkg'] as const;

async function boot(t: Test, firmware: 'uefi' | 'bios', mac: string, nbp: string): Promise<void> {
  const dataDir = tempDir(t, `tftp-fw-${firmware}`);
  await writeTestImage(dataDir, 'test', { minRamMiB: 256 });
  const www = tempDir(t, 'tftp-fw-www');
  await writeFile(
    join(www, 'stage0.ipxe'),
    ['#!ipxe', 'echo STAGE0 chip=${net0/chip}', `iseq \${net0/chip} virtio-net || chain ${BASE}/boot.ipxe`, 'chain tftp://${next-server}/undionly.kpxe', ''].join('\n'),
  );
  const ns = await createNetns(t, { name: `tftpfw-${firmware}`, dhcp: { boot: { ipxe: STAGE0, bios: 'undionly.kpxe', efi: 'snponly.efi' } } });
  ns.spawn('httpd', ['busybox', 'httpd', '-f', '-p', '10.99.0.1:8081', '-h', www]);
  await ns.waitForHttp(STAGE0);
  const srv = await startRambootServer(t, {
    dataDir, httpHost: ns.address, httpPort: 8080, publicUrl: BASE, wrap: ns.wrap,
    tftpListen: `${ns.address}:69`, ipxeDir: '/usr/lib/ipxe', name: `ramboot-tftp-fw-${firmware}`,
  });
  const put = await srv.api('PUT', `/api/v1/machines/${mac}`, { hostname: `tftp-${firmware}`, sshKeys: [], boot: 'ramboot', image: 'test' });
  t.ok(put.status === 200 || put.status === 201, `PUT machine -> ${put.status}`);
  if (put.status !== 200 && put.status !== 201) return;

  const vm = startQemu(t, {
    name: `qemu-tftp-${firmware}`,
    firmware,
    wrap: ns.wrap,
    memoryMiB: 512,
    // UEFI: no option ROM, so OVMF's own PXE does DHCP + TFTP; bootindex because OVMF ignores -boot n.
    nics: [firmware === 'uefi' ? { type: 'tap', ifname: ns.tap, mac, bootindex: 1, romfile: '' } : { type: 'tap', ifname: ns.tap, mac }],
  });
  const tftpDone = srv.waitForLog((l: LogLine) => l['event'] === 'tftp.transfer' && l['file'] === nbp && l['outcome'] === 'ok', 300_000);
  const m = await vm.waitFor(MARKER_RE, { timeoutMs: 400_000 });
  t.match(m[1] ?? '', `ds=nocloud-net;s=${BASE}/cloud-init/${mac}/`, `${firmware}: the test initrd ran with ramboot's cmdline`);
  const ev = await tftpDone;
  t.match(ev, { outcome: 'ok', bytes: Number }, `${firmware}: ${nbp} went over ramboot's TFTP`);
  t.comment(`${nbp}: ${JSON.stringify({ options: ev['options'], bytes: ev['bytes'], durationMs: ev['durationMs'], retransmits: ev['retransmits'] })}`);
  // OVMF asks for tsize alone first and aborts that request with ERROR 8: expected, not a failure.
  const failures = srv.logs().filter((l) => l['event'] === 'tftp.transfer' && l['outcome'] !== 'ok' && l['level'] !== 'info');
  t.same(failures, [], 'no TFTP transfer failed or timed out');
  await vm.waitForExit(120_000).catch(() => undefined);
  const events = await srv.api('GET', `/api/v1/machines/${mac}/events`);
  t.match(events.text, new RegExp(`tftp\\.transfer[^]*${nbp.replace('.', '\\.')}`), `${firmware}: the TFTP transfer is on the machine's timeline`);
}

t.test('UEFI: OVMF PXE fetches snponly.efi over TFTP, iPXE chains to HTTP', async (t) => {
  if (!requirements(t, REQS)) return;
  await boot(t, 'uefi', '52:54:00:99:01:01', 'snponly.efi');
});

t.test('BIOS: SeaBIOS + iPXE ROM chains undionly.kpxe over TFTP, then HTTP', async (t) => {
  if (!requirements(t, REQS)) return;
  await boot(t, 'bios', '52:54:00:99:01:02', 'undionly.kpxe');
});
