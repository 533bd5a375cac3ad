import t from 'tap';
import { startTestServer, writeFakeImage, type TestServer } from './lib/in-process-server.js';
import { Scrape } from './lib/prometheus.js';
import { simulateBoot } from './lib/simulated-boot.js';
import { makeKeyPair } from './lib/ssh-keys.js';
import { freePort } from './lib/free-port.js';

const admin = makeKeyPair().pub;
const MAC = '52:54:00:33:00:01';

async function scrape(s: TestServer): Promise<Scrape> {
  const r = await s.api('GET', '/metrics');
  if (r.status !== 200) throw new Error(`GET /metrics: ${r.status}`);
  t.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  return new Scrape(r.text);
}

t.test('a scripted boot moves the counters by exactly what happened', async (t) => {
  const s = await startTestServer(t);
  const { files } = await writeFakeImage(s.dataDir, 'default', { initrdBytes: 300_000 });
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [admin], boot: 'once' });
  const before = await scrape(s);
  t.ok(before.has('process_cpu_user_seconds_total'), 'default process metrics');
  t.ok(before.has('nodejs_eventloop_lag_seconds'), 'default Node metrics');
  t.equal(before.value('ramboot_machines', { state: 'registered' }), 1);
  t.equal(before.value('ramboot_machines', { state: 'ready' }), 0, 'state series exist at 0');

  const boot = await simulateBoot(s.url, MAC, { registry: s.rb.registry });
  t.same(boot.imageBytes, { 'default/vmlinuz': files['vmlinuz']!.length, 'default/initrd.img': 300_000 });
  // an unknown MAC is discovered; then the booted machine (now local) asks again
  await fetch(`${s.url}/ipxe?mac=02:00:00:00:00:09`);
  await fetch(`${s.url}/ipxe?mac=${MAC}`);
  await fetch(`${s.url}/ipxe?mac=52:54:00:33:00:99`).then((r) => r.text());

  const after = await scrape(s);
  const d = (name: string, labels: Record<string, string> = {}) => after.value(name, labels) - before.value(name, labels);
  t.equal(d('ramboot_boot_scripts_total', { decision: 'once' }), 1, 'one once script');
  t.equal(d('ramboot_boot_scripts_total', { decision: 'discovered' }), 2, 'unknown MACs: discovered (recorded now, and known-discovered)');
  t.equal(d('ramboot_boot_scripts_total', { decision: 'local' }), 1, 'after ready: local');
  t.equal(d('ramboot_boot_scripts_total', { decision: 'ramboot' }), 0);
  t.equal(d('ramboot_image_bytes_total', { image: 'default', file: 'initrd.img' }), 300_000, 'initrd bytes');
  t.equal(d('ramboot_image_bytes_total', { image: 'default', file: 'vmlinuz' }), files['vmlinuz']!.length, 'kernel bytes');
  t.equal(d('ramboot_http_requests_total', { route: '/ipxe', method: 'GET', status: '200' }), 4);
  t.equal(d('ramboot_http_requests_total', { route: '/images/:name/:file', method: 'GET', status: '200' }), 2);
  t.equal(d('ramboot_http_requests_total', { route: '/cloud-init/:mac/:token/phone-home', method: 'POST', status: '200' }), 1);
  t.equal(d('ramboot_http_requests_total', { route: '/api/v1/machines/:mac', method: 'PUT', status: '201' }), 0, 'PUT was before the first scrape');
  t.equal(after.value('ramboot_http_requests_total', { route: '/api/v1/machines/:mac', method: 'PUT', status: '201' }), 1);
  t.equal(after.count('ramboot_http_request_duration_seconds', { route: '/ipxe', method: 'GET' }), 4, 'duration histogram per route');
  for (const stage of ['image_fetch', 'os_sshd_ready', 'phone_home_ready']) t.equal(after.count('ramboot_boot_stage_duration_seconds', { stage }), 1, `stage ${stage} timed once`);
  t.equal(after.count('ramboot_boot_duration_seconds'), 1, 'whole boot timed once');
  t.equal(after.value('ramboot_machines', { state: 'ready' }), 1, 'gauge from the registry at scrape time');
  t.equal(after.value('ramboot_machines', { state: 'discovered' }), 2);
  t.equal(after.value('ramboot_machines', { state: 'registered' }), 0);

  // no MAC, token or raw URL in any label
  const labels = after.allLabelValues();
  t.notOk(labels.some((v) => /([0-9a-f]{2}[:-]){5}[0-9a-f]{2}/i.test(v) || v.includes(s.token) || v.includes('/cloud-init/52')), 'labels carry route patterns only');
});

t.test('/metrics needs the admin token; --metrics-listen serves it without one', async (t) => {
  const port = await freePort();
  const s = await startTestServer(t, { metricsListen: `127.0.0.1:${port}` });
  t.equal((await fetch(`${s.url}/metrics`)).status, 401, 'main listener: token required');
  t.equal((await s.api('GET', '/metrics')).status, 200);
  t.equal(s.rb.metricsUrl, `http://127.0.0.1:${port}`);
  const r = await fetch(`${s.rb.metricsUrl}/metrics`);
  t.equal(r.status, 200, 'own listener: no token');
  t.ok(new Scrape(await r.text()).has('ramboot_http_requests_total'));
  t.equal((await fetch(`${s.rb.metricsUrl}/api/v1/machines`)).status, 404, 'nothing but /metrics there');
  const bad = await fetch(`${s.url}/no/such/page/52:54:00:00:00:01`);
  t.equal(bad.status, 404);
  const sc = await scrape(s);
  t.ok(sc.value('ramboot_http_requests_total', { route: 'unmatched', method: 'GET', status: '404' }) >= 1, 'unrouted requests are "unmatched"');
});

t.test('TFTP transfers are counted by result with bytes and retransmits', async (t) => {
  const s = await startTestServer(t);
  const m = s.rb.metrics;
  const before = new Scrape((await m.text()).body);
  m.tftp({ client: { address: '127.0.0.1', port: 1 }, file: 'undionly.kpxe', options: {}, bytes: 70_000, durationMs: 10, retransmits: 3, sentBytes: 70_000, outcome: 'ok' });
  m.tftp({ client: { address: '127.0.0.1', port: 2 }, file: 'x', options: {}, bytes: 0, durationMs: 1, retransmits: 0, sentBytes: 0, outcome: 'error', error: 'client error 8: x' });
  const after = new Scrape((await m.text()).body);
  t.equal(after.value('ramboot_tftp_transfers_total', { result: 'ok' }) - before.value('ramboot_tftp_transfers_total', { result: 'ok' }), 1);
  t.equal(after.value('ramboot_tftp_transfers_total', { result: 'error' }) - before.value('ramboot_tftp_transfers_total', { result: 'error' }), 1);
  t.equal(after.value('ramboot_tftp_bytes_total') - before.value('ramboot_tftp_bytes_total'), 70_000);
  t.equal(after.value('ramboot_tftp_retransmits_total') - before.value('ramboot_tftp_retransmits_total'), 3);
});
