import t from 'tap';
import type { Mac } from '../../common/mac.js';
import type { MachineEvent } from '../events/event-log.js';
import { Metrics, routeLabel, scriptDecision } from './metrics.js';

const MAC = '52:54:00:00:00:01' as Mac;
const at = (s: number, event: string): MachineEvent => ({ time: new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString(), event, level: 'info', message: '' });

async function sample(m: Metrics, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const metric = m.registry.getSingleMetric(name.replace(/_(sum|count)$/, ''));
  const got = await metric?.get();
  const v = got?.values.find((x) => ((x as { metricName?: string }).metricName ?? got.name) === name && Object.entries(labels).every(([k, val]) => String(x.labels[k]) === val));
  return v?.value;
}

t.test('boot stages are timed from the timeline: script -> last image file -> sshd -> phone-home', async (t) => {
  const m = new Metrics(() => []);
  for (const [s, e] of [[0, 'ipxe.script'], [2, 'image.fetch'], [5, 'image.fetch'], [6, 'cloud-init.user-data'], [12, 'os.sshd.ready'], [20, 'phone-home.ready']] as const) m.timelineEvent(MAC, at(s, e));
  t.equal(await sample(m, 'ramboot_boot_stage_duration_seconds_sum', { stage: 'image_fetch' }), 5);
  t.equal(await sample(m, 'ramboot_boot_stage_duration_seconds_sum', { stage: 'os_sshd_ready' }), 7);
  t.equal(await sample(m, 'ramboot_boot_stage_duration_seconds_sum', { stage: 'phone_home_ready' }), 8);
  t.equal(await sample(m, 'ramboot_boot_duration_seconds_sum'), 20);
  // a phone-home without a boot script seen (server restarted meanwhile) times nothing
  m.timelineEvent(MAC, at(30, 'phone-home.ready'));
  t.equal(await sample(m, 'ramboot_boot_duration_seconds_count'), 1);
});

t.test('a new script restarts the clock; a boot without sshd event still times the rest', async (t) => {
  const m = new Metrics(() => []);
  m.timelineEvent(MAC, at(0, 'ipxe.script'));
  m.timelineEvent(MAC, at(100, 'ipxe.script'));
  m.timelineEvent(MAC, at(103, 'image.fetch'));
  m.timelineEvent(MAC, at(110, 'phone-home.ready'));
  t.equal(await sample(m, 'ramboot_boot_stage_duration_seconds_sum', { stage: 'image_fetch' }), 3);
  t.equal(await sample(m, 'ramboot_boot_stage_duration_seconds_sum', { stage: 'phone_home_ready' }), 7);
  t.equal(await sample(m, 'ramboot_boot_stage_duration_seconds_count', { stage: 'os_sshd_ready' }), undefined, 'no sshd stage observed');
  t.equal(await sample(m, 'ramboot_boot_duration_seconds_sum'), 10);
});

t.test('labels: route patterns and decisions', async (t) => {
  t.equal(routeLabel('', '/api/v1/machines/:mac'), '/api/v1/machines/:mac');
  t.equal(routeLabel('/x', '/y'), '/x/y');
  t.equal(routeLabel('', undefined), 'unmatched');
  t.equal(scriptDecision({ kind: 'refuse', reason: 'r' }), 'refused');
  t.equal(scriptDecision({ kind: 'local', reason: 'r' }), 'local');
});

t.test('proxyDHCP outcomes are counted by client kind', async (t) => {
  const m = new Metrics(() => []);
  m.dhcp({ event: 'dhcp.offer', data: { firmware: 'efi' } });
  m.dhcp({ event: 'dhcp.offer', data: { firmware: 'efi' } });
  m.dhcp({ event: 'dhcp.ignored', data: { firmware: 'bios' } });
  t.equal(await sample(m, 'ramboot_dhcp_requests_total', { outcome: 'offer', client: 'efi' }), 2);
  t.equal(await sample(m, 'ramboot_dhcp_requests_total', { outcome: 'ignored', client: 'bios' }), 1);
});

t.test('TFTP requests dropped by a limit count as refused transfers', async (t) => {
  const m = new Metrics(() => []);
  m.tftpRefused();
  t.equal(await sample(m, 'ramboot_tftp_transfers_total', { result: 'refused' }), 1);
});

t.test('deploys: artifact bytes and the deploy stage come from the timeline', async (t) => {
  const m = new Metrics(() => []);
  m.timelineEvent(MAC, { ...at(0, 'deploy.started') });
  m.timelineEvent(MAC, { ...at(1, 'artifact.fetch'), data: { artifact: 'disk', bytes: 4096 } });
  m.timelineEvent(MAC, { ...at(1, 'artifact.fetch'), data: { artifact: 'disk', bytes: 1024 } });
  m.timelineEvent(MAC, { ...at(9, 'deploy.succeeded') });
  t.equal(await sample(m, 'ramboot_artifact_bytes_total', { artifact: 'disk' }), 5120);
  t.equal(await sample(m, 'ramboot_boot_stage_duration_seconds_sum', { stage: 'deploy' }), 9);
  m.timelineEvent(MAC, { ...at(20, 'deploy.started') });
  m.timelineEvent(MAC, { ...at(25, 'deploy.failed') });
  t.equal(await sample(m, 'ramboot_boot_stage_duration_seconds_count', { stage: 'deploy' }), 1, 'a failed deploy is not timed as done');
});
