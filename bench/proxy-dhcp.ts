/**
 * Netboot benchmark, proxyDHCP vs a configured site DHCP server: QEMU start (TCG) -> ramboot serves
 * the per-MAC iPXE script (GET /ipxe?mac=...), for SeaBIOS + QEMU's iPXE ROM and for OVMF's own PXE
 * (TFTP snponly.efi). Root only: two network namespaces made here, side by side, boots interleaved
 * so that both modes share the machine's load.
 *   proxy:   busybox udhcpd (addresses only) + RA-only dnsmasq + ramboot with its proxyDHCP
 *   dnsmasq: dnsmasq as the site DHCP server with ramboot's boot options (as test/lib/netns.ts)
 *   RAMBOOT_BENCH_BOOTS=N   boots per cell (default 3)
 * Run: `npx tsx bench/proxy-dhcp.ts`.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netns } from '../test/lib/netns.js';
import { Qemu, type QemuNic } from '../test/lib/qemu.js';
import { launchRambootServer, startRambootServer, type RambootServer } from '../test/lib/ramboot-server.js';
import { writeTestImage } from '../test/lib/test-image.js';
import { BenchScope } from './scope.js';
import { machineLine, median, progress } from './lib.js';

const IP = '10.99.0.1';
const BASE = `http://${IP}:8080`;
const MAC = { bios: '52:54:00:be:00:01', uefi: '52:54:00:be:00:02' } as const;
type Mode = 'proxy' | 'dnsmasq';
type Firmware = 'bios' | 'uefi';

interface Env {
  mode: Mode;
  ns: Netns;
  srv: RambootServer;
}

async function register(srv: RambootServer): Promise<void> {
  for (const mac of Object.values(MAC)) {
    const r = await srv.api('PUT', `/api/v1/machines/${mac}`, { hostname: `bench-${mac.slice(-2)}`, sshKeys: [], boot: 'ramboot', image: 'test' });
    if (r.status !== 200 && r.status !== 201) throw new Error(`PUT ${mac} -> ${r.status}`);
  }
}

async function setup(scope: BenchScope, mode: Mode, tmp: string): Promise<Env> {
  const dataDir = join(tmp, `data-${mode}`);
  await writeTestImage(dataDir, 'test', { minRamMiB: 256 });
  if (mode === 'dnsmasq') {
    const ns = await Netns.create({ name: 'bench-dnsmasq', ipv4: IP, dhcp: { boot: { ipxe: `${BASE}/boot.ipxe` } } });
    scope.teardown(() => ns.destroy());
    const srv = await launchRambootServer({ dataDir, httpHost: IP, httpPort: 8080, publicUrl: BASE, wrap: ns.wrap, tftpListen: `${IP}:69`, ipxeDir: '/usr/lib/ipxe', name: 'bench-ramboot-dnsmasq' });
    scope.teardown(() => srv.stop());
    await register(srv);
    return { mode, ns, srv };
  }
  const ns = await Netns.create({ name: 'bench-proxy', ipv4: IP });
  scope.teardown(() => ns.destroy());
  const ra = ns.spawn('dnsmasq-ra', ['dnsmasq', '--conf-file=/dev/null', '--keep-in-foreground', '--log-facility=-', `--pid-file=${join(tmp, 'ra.pid')}`, '--port=0', '--bind-interfaces', `--interface=${ns.bridge}`, '--enable-ra', `--dhcp-range=${ns.ula},ra-only,64`]);
  await ra.waitFor(/started/, { timeoutMs: 30_000 });
  const conf = join(tmp, 'udhcpd.conf');
  await writeFile(join(tmp, 'udhcpd.leases'), '');
  await writeFile(conf, [`interface ${ns.bridge}`, `start ${ns.subnet24}.100`, `end ${ns.subnet24}.199`, `lease_file ${join(tmp, 'udhcpd.leases')}`, 'option subnet 255.255.255.0', ''].join('\n'));
  ns.spawn('udhcpd', ['busybox', 'udhcpd', '-f', conf]);
  const srv = await startRambootServer(scope, {
    dataDir, httpHost: IP, httpPort: 8080, publicUrl: BASE, tftpListen: `${IP}:69`, ipxeDir: '/usr/lib/ipxe',
    extraArgs: ['--unknown-boot', 'local', '--proxy-dhcp', '--dhcp-interface', ns.bridge], wrap: ns.wrap, name: 'bench-ramboot-proxy',
  });
  await register(srv);
  return { mode, ns, srv };
}

/** Seconds from QEMU start to the per-MAC script being served. */
async function bootOnce(env: Env, fw: Firmware, run: number): Promise<number> {
  const mac = MAC[fw];
  const before = env.srv.logs().length;
  const nic: QemuNic = fw === 'uefi' ? { type: 'tap', ifname: env.ns.tap, mac, bootindex: 1, romfile: '' } : { type: 'tap', ifname: env.ns.tap, mac };
  const vm = new Qemu({
    name: `bench-proxy-dhcp-${env.mode}-${fw}-${run}`,
    firmware: fw,
    wrap: env.ns.wrap,
    memoryMiB: 512,
    nics: [nic],
    extraArgs: fw === 'uefi' ? ['-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=n'] : [],
  });
  const started = Date.now();
  try {
    let n = 0;
    // ipxe.ramboot / ipxe.local / ipxe.refused: logged (at info) when the per-MAC script is served
    await env.srv.waitForLog((l) => n++ >= before && String(l['event']).startsWith('ipxe.') && l['mac'] === mac, 300_000);
    return (Date.now() - started) / 1000;
  } finally {
    await vm.stop();
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/proxy-dhcp.ts needs root (network namespaces, taps)');
  const boots = Number(process.env['RAMBOOT_BENCH_BOOTS'] ?? 3);
  const scope = new BenchScope();
  const tmp = await mkdtemp(join(tmpdir(), 'ramboot-bench-proxy-'));
  const times = new Map<string, number[]>();
  const loads: number[] = [];
  try {
    const envs = [await setup(scope, 'proxy', join(tmp)), await setup(scope, 'dnsmasq', join(tmp))];
    for (let i = 0; i < boots; i++) {
      for (const fw of ['bios', 'uefi'] as const) {
        for (const env of i % 2 === 0 ? envs : [...envs].reverse()) {
          loads.push(loadavg()[0] ?? 0);
          const s = await bootOnce(env, fw, i);
          const key = `${env.mode} ${fw}`;
          times.set(key, [...(times.get(key) ?? []), s]);
          progress(`${key} run ${i + 1}: ${s.toFixed(1)} s`);
        }
      }
    }
  } finally {
    await scope.close();
    await rm(tmp, { recursive: true, force: true });
  }
  const lines = [
    `# power-on -> per-MAC iPXE script (QEMU TCG, 512 MiB), ${boots} boots per cell, interleaved`,
    `# ${machineLine()}, load avg during runs ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}`,
    '',
    '| firmware | proxyDHCP (median, all) | dnsmasq-configured (median, all) |',
    '|---|---|---|',
  ];
  for (const fw of ['bios', 'uefi'] as const) {
    const cell = (m: Mode): string => {
      const xs = times.get(`${m} ${fw}`) ?? [];
      return `${median(xs).toFixed(1)} s (${xs.map((x) => x.toFixed(1)).join(', ')})`;
    };
    lines.push(`| ${fw === 'bios' ? 'SeaBIOS + iPXE ROM' : 'OVMF PXE -> snponly.efi'} | ${cell('proxy')} | ${cell('dnsmasq')} |`);
  }
  console.log(lines.join('\n'));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
