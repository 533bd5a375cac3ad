// The scripts the hooks install into the OS (boot-assets/hooks/files), run here for real:
// ramboot-report against a real HTTP server on loopback, ramboot-hostname, ramboot-ssh-hostkeys.
import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, readFileSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hooksDir } from '../../builder/hooks.js';
import { requirements } from '../../test/lib/requirements.js';
import { tempDir } from '../../test/lib/temp-dir.js';
import { startTestServer, writeFakeImage } from '../../test/lib/in-process-server.js';
import { makeKeyPair } from '../../test/lib/ssh-keys.js';

const FILES = join(hooksDir(), 'files');

interface Received {
  method: string;
  url: string;
  contentType: string;
  body: string;
}

/** An HTTP server on 127.0.0.1 that records requests and answers with the given statuses in turn. */
async function eventServer(t: Pick<Test, 'teardown'>, statuses: number[] = [204]) {
  const received: Received[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      received.push({ method: req.method ?? '', url: req.url ?? '', contentType: req.headers['content-type'] ?? '', body });
      res.statusCode = statuses[Math.min(received.length - 1, statuses.length - 1)] ?? 204;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as AddressInfo).port;
  return { received, base: `http://127.0.0.1:${port}` };
}

/** Runs a script asynchronously (the HTTP server lives in this process). */
function runScript(path: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(path, args, { env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const report = (args: string[], env: Record<string, string>) => runScript(join(FILES, 'ramboot-report'), args, env);

t.test('ramboot-report POSTs the event as JSON to <seed>event', async (t) => {
  const srv = await eventServer(t);
  const seed = `${srv.base}/cloud-init/52:54:00:12:34:56/tok3n/`;
  const r = await report(['os.booted', 'kernel 6.1.0, "quoted" back\\slash\ttab\nnewline é'], {
    RAMBOOT_CMDLINE: `BOOT_IMAGE=vmlinuz console=ttyS0 ds=nocloud-net;s=${seed} BOOTIF=01-52-54-00-12-34-56`,
  });
  t.equal(r.code, 0, r.stderr);
  t.equal(srv.received.length, 1);
  const got = srv.received[0];
  t.equal(got?.method, 'POST');
  t.equal(got?.url, '/cloud-init/52:54:00:12:34:56/tok3n/event');
  t.equal(got?.contentType, 'application/json');
  t.same(JSON.parse(got?.body ?? ''), { event: 'os.booted', message: 'kernel 6.1.0, "quoted" back\\slash tab newline   ' }, 'valid JSON, control and non-ASCII bytes become spaces');
});

t.test('ramboot-report reads the seed however the boot loader quoted it', async (t) => {
  const srv = await eventServer(t);
  const forms = [
    `ds=nocloud-net\\;s=${srv.base}/a/`,
    `"ds=nocloud-net;s=${srv.base}/b/"`,
    `ds=nocloud;s=${srv.base}/c`,
    `ds=nocloud-net;seedfrom=${srv.base}/d/`,
  ];
  for (const form of forms) {
    const r = await report(['sshd.ready'], { RAMBOOT_CMDLINE: `quiet ${form} panic=-1` });
    t.equal(r.code, 0, `${form}: ${r.stderr}`);
  }
  t.same(srv.received.map((x) => x.url), ['/a/event', '/b/event', '/c/event', '/d/event']);
  t.same(JSON.parse(srv.received[0]?.body ?? ''), { event: 'sshd.ready' }, 'no message field when there is none');
});

t.test('ramboot-report caps the message at 1024 characters', async (t) => {
  const srv = await eventServer(t);
  const r = await report(['x', 'y'.repeat(5000)], { RAMBOOT_CMDLINE: `ds=nocloud-net;s=${srv.base}/s/` });
  t.equal(r.code, 0);
  const msg = (JSON.parse(srv.received[0]?.body ?? '{}') as { message?: string }).message ?? '';
  t.ok(msg.length > 0 && msg.length <= 1024, `message length ${msg.length}`);
});

t.test('ramboot-report never fails the boot: no seed, server errors, server down', async (t) => {
  const none = await report(['os.booted'], { RAMBOOT_CMDLINE: 'quiet console=ttyS0' });
  t.equal(none.code, 0);
  t.match(none.stderr, /no ds=nocloud-net;s=http\(s\):\/\/\.\.\. seed URL/);

  const srv = await eventServer(t, [500, 503, 204]);
  const retried = await report(['os.booted'], { RAMBOOT_CMDLINE: `ds=nocloud-net;s=${srv.base}/r/`, RAMBOOT_REPORT_TRIES: '5' });
  t.equal(retried.code, 0);
  t.equal(srv.received.length, 3, 'retried after 5xx until accepted');

  const refused = await eventServer(t, [400]);
  const r400 = await report(['os.booted'], { RAMBOOT_CMDLINE: `ds=nocloud-net;s=${refused.base}/q/`, RAMBOOT_REPORT_TRIES: '5' });
  t.equal(r400.code, 0);
  t.equal(refused.received.length, 1, 'a 4xx is not retried');
  t.match(r400.stderr, /refused by the server \(HTTP 400\)/);

  // A port nothing listens on (bound then closed): connection refused, every attempt.
  const gone = await eventServer(t);
  const { createServer: mk } = await import('node:net');
  const probe = mk();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const started = Date.now();
  const down = await report(['os.booted'], { RAMBOOT_CMDLINE: `ds=nocloud-net;s=http://127.0.0.1:${port}/x/`, RAMBOOT_REPORT_TRIES: '2' });
  t.equal(down.code, 0);
  t.match(down.stderr, /not sent after 2 attempts/);
  t.ok(Date.now() - started < 60_000, 'gives up quickly');
  t.equal(gone.received.length, 0);
});

t.test('ramboot-report refuses a bad event name (exit 2, nothing sent)', async (t) => {
  const srv = await eventServer(t);
  for (const bad of ['', 'Os.Booted', 'a b', 'x'.repeat(65), 'evt;rm', '../x']) {
    const r = await report([bad], { RAMBOOT_CMDLINE: `ds=nocloud-net;s=${srv.base}/s/` });
    t.equal(r.code, 2, JSON.stringify(bad));
  }
  t.equal((await report([], {})).code, 2);
  t.equal(srv.received.length, 0);
});

t.test('ramboot-report-boot booted: os.booted with kernel and uptime', async (t) => {
  const dir = tempDir(t, 'report-boot');
  const fake = join(dir, 'report');
  writeFileSync(fake, `#!/bin/sh\nprintf '%s|' "$@" > "${join(dir, 'args')}"\n`, { mode: 0o755 });
  const r = spawnSync(join(FILES, 'ramboot-report-boot'), ['booted'], { encoding: 'utf8', env: { PATH: process.env['PATH'] ?? '', RAMBOOT_REPORT: fake } });
  t.equal(r.status, 0, r.stderr);
  t.match(readFileSync(join(dir, 'args'), 'utf8'), /^os\.booted\|kernel \S+, up [0-9.]+s\|$/);
  t.equal(spawnSync(join(FILES, 'ramboot-report-boot'), ['nope']).status, 2);
});

t.test('ramboot-report-boot sshd: host keys first (known_hosts is ready), then sshd.ready', async (t) => {
  const dir = tempDir(t, 'report-boot-sshd');
  const calls = join(dir, 'calls');
  const fakeReport = join(dir, 'report');
  const fakeKeys = join(dir, 'hostkeys');
  writeFileSync(fakeReport, `#!/bin/sh\nprintf 'report %s\\n' "$1" >> "${calls}"\n`, { mode: 0o755 });
  writeFileSync(fakeKeys, `#!/bin/sh\necho hostkeys >> "${calls}"\n`, { mode: 0o755 });
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  // a systemctl that says ssh.service is active
  writeFileSync(join(bin, 'systemctl'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  const r = spawnSync(join(FILES, 'ramboot-report-boot'), ['sshd'], { encoding: 'utf8', env: { PATH: `${bin}:${process.env['PATH'] ?? ''}`, RAMBOOT_REPORT: fakeReport, RAMBOOT_REPORT_HOSTKEYS: fakeKeys } });
  t.equal(r.status, 0, r.stderr);
  t.equal(readFileSync(calls, 'utf8'), 'hostkeys\nreport sshd.ready\n', 'keys before the event');
});

t.test('ramboot-report-hostkeys: the real server stores the keys at once; known_hosts is served before phone-home', async (t) => {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  const mac = '52:54:00:0e:0e:01';
  await s.api('PUT', `/api/v1/machines/${mac}`, { sshKeys: [makeKeyPair().pub], hostname: 'early', boot: 'once' });
  const script = await (await fetch(`${s.url}/ipxe?mac=${mac}`)).text();
  const seedPath = new URL(/;s=(\S+\/)/.exec(script)![1]!).pathname;
  const ssh = tempDir(t, 'hostkeys-dir');
  const ed = makeKeyPair('ed25519', undefined, 'root@early').pub;
  const ec = makeKeyPair('ecdsa', 256, 'root@early').pub;
  writeFileSync(join(ssh, 'ssh_host_ed25519_key.pub'), `${ed}\n`);
  writeFileSync(join(ssh, 'ssh_host_ecdsa_key.pub'), `${ec}\n`);
  const env = { PATH: process.env['PATH'] ?? '', RAMBOOT_SSH_DIR: ssh, RAMBOOT_CMDLINE: `quiet ds=nocloud-net;s=${s.url}${seedPath}`, RAMBOOT_REPORT_TRIES: '2' };
  const run = () => new Promise<{ code: number | null; out: string }>((resolve) => {
    const p = spawn(join(FILES, 'ramboot-report-hostkeys'), [], { env });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.on('close', (code) => resolve({ code, out }));
  });
  const first = await run();
  t.equal(first.code, 0);
  t.match(first.out, /host keys sent/);
  const two = (k: string) => k.split(' ').slice(0, 2).join(' ');
  t.equal((await s.api('GET', `/api/v1/machines/${mac}/known_hosts`)).text, `127.0.0.1,early ${two(ed)}\n127.0.0.1,early ${two(ec)}\n`);
  t.match((await s.api('GET', `/api/v1/machines/${mac}`)).json, { boot: 'once', status: { state: 'registered' } }, 'nothing else changes: not ready, not flipped');
  const events = ((await s.api('GET', `/api/v1/machines/${mac}/events`)).json as { events: { event: string }[] }).events.map((e) => e.event);
  t.ok(events.includes('host-keys.reported'));
  // after the session phoned home, its host-keys reports are refused (the phone-home has the last word)
  t.equal((await fetch(`${s.url}${seedPath}phone-home`, { method: 'POST', body: new URLSearchParams({ pub_key_ed25519: ed }) })).status, 200);
  const late = await run();
  t.match(late.out, /refused by the server \(HTTP 409\)/);
  const bad = await fetch(`${s.url}${seedPath}host-keys`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ keys: ['not a key'] }) });
  t.equal(bad.status, 400);
});

t.test('ramboot-hostname: ramboot-<boot MAC> only while the name is the placeholder', async (t) => {
  const dir = tempDir(t, 'hostname');
  const out = join(dir, 'hostname');
  const run = (current: string, env: Record<string, string>): string => {
    writeFileSync(out, `${current}\n`);
    const r = spawnSync(join(FILES, 'ramboot-hostname'), [], { encoding: 'utf8', env: { PATH: process.env['PATH'] ?? '', RAMBOOT_HOSTNAME_FILE: out, ...env } });
    if (r.status !== 0) throw new Error(r.stderr);
    return readFileSync(out, 'utf8').trim();
  };
  t.equal(run('ramboot', { RAMBOOT_CMDLINE: 'quiet BOOTIF=01-52-54-00-AB-CD-EF *' }), 'ramboot-525400abcdef', 'from BOOTIF');
  t.equal(run('localhost', { RAMBOOT_CMDLINE: 'BOOTIF=52-54-00-ab-cd-01' }), 'ramboot-525400abcd01');
  t.equal(run('web1', { RAMBOOT_CMDLINE: 'BOOTIF=01-52-54-00-ab-cd-ef' }), 'web1', 'a real name is kept');

  const sysfs = join(dir, 'net');
  for (const [nic, type, mac, physical] of [['lo', '772', '00:00:00:00:00:00', false], ['br0', '1', '02:00:00:00:00:01', false], ['enp1s0', '1', '52:54:00:00:00:99', true]] as const) {
    mkdirSync(join(sysfs, nic), { recursive: true });
    writeFileSync(join(sysfs, nic, 'type'), `${type}\n`);
    writeFileSync(join(sysfs, nic, 'address'), `${mac}\n`);
    if (physical) mkdirSync(join(sysfs, nic, 'device'));
  }
  t.equal(run('ramboot', { RAMBOOT_CMDLINE: 'quiet', RAMBOOT_SYSFS_NET: sysfs }), 'ramboot-525400000099', 'first physical Ethernet NIC');
  t.equal(run('ramboot', { RAMBOOT_CMDLINE: 'BOOTIF=garbage', RAMBOOT_SYSFS_NET: join(dir, 'none') }), 'ramboot', 'nothing usable: the placeholder stays');
});

t.test('ramboot-ssh-hostkeys: ed25519 + ecdsa, no RSA, existing keys kept', async (t) => {
  if (!requirements(t, ['ssh-keygen'])) return;
  const dir = tempDir(t, 'ssh');
  const run = () => spawnSync(join(FILES, 'ramboot-ssh-hostkeys'), [], { encoding: 'utf8', env: { PATH: `${process.env['PATH'] ?? ''}:/usr/bin`, RAMBOOT_SSH_DIR: dir } });
  t.equal(run().status, 0);
  for (const k of ['ed25519', 'ecdsa']) {
    t.ok(existsSync(join(dir, `ssh_host_${k}_key`)), `${k} key`);
    t.ok(existsSync(join(dir, `ssh_host_${k}_key.pub`)), `${k} pub`);
  }
  t.notOk(existsSync(join(dir, 'ssh_host_rsa_key')), 'no RSA');
  const ed = readFileSync(join(dir, 'ssh_host_ed25519_key.pub'), 'utf8');
  t.match(ed, /^ssh-ed25519 /);
  t.equal(run().status, 0);
  t.equal(readFileSync(join(dir, 'ssh_host_ed25519_key.pub'), 'utf8'), ed, 'kept on a second run');
  const broken = spawnSync(join(FILES, 'ramboot-ssh-hostkeys'), [], { encoding: 'utf8', env: { PATH: `${process.env['PATH'] ?? ''}:/usr/bin`, RAMBOOT_SSH_DIR: join(dir, 'missing') } });
  t.not(broken.status, 0, 'a key that cannot be made fails the unit (sshd would have no host key)');
});

t.test('ramboot-nocloud reads what the ramboot server serves: keys + hostname early, phone_home later from the kept seed', async (t) => {
  if (!requirements(t, ['ssh-keygen'])) return;
  const { machineRecordSchema } = await import('../../server/machines/model.js');
  const { userData, metaData } = await import('../../server/boot/cloud-config.js');
  const { hostKeysFromPhoneHome } = await import('../../server/boot/host-keys.js');
  const dir = tempDir(t, 'nocloud');
  const prefix = join(dir, 'root');
  mkdirSync(join(prefix, 'etc/ssh'), { recursive: true });
  writeFileSync(join(prefix, 'etc/hosts'), '127.0.0.1\tlocalhost\n127.0.1.1\tramboot\n');
  writeFileSync(join(prefix, 'etc/hostname'), 'ramboot\n');
  const env = { PATH: `${process.env['PATH'] ?? ''}:/usr/bin` };
  t.equal(spawnSync(join(FILES, 'ramboot-ssh-hostkeys'), [], { env: { ...env, RAMBOOT_SSH_DIR: join(prefix, 'etc/ssh') } }).status, 0, 'host keys');
  const userKeys: string[] = [];
  for (const type of ['ed25519', 'ecdsa']) {
    const k = join(dir, `user_${type}`);
    spawnSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-C', `admin ${type}: "quoted"`, '-f', k], { env });
    userKeys.push(readFileSync(`${k}.pub`, 'utf8').trim());
  }
  const record = machineRecordSchema.parse({ mac: '52:54:00:12:34:56', hostname: 'web1.example.com', sshKeys: userKeys, userData: { runcmd: ['echo hi'] } });

  const phoneHomes: string[] = [];
  const gets: string[] = [];
  const server = createServer((req, res) => {
    if (req.method === 'GET') gets.push(req.url ?? '');
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      const url = req.url ?? '';
      if (req.method === 'GET' && url === '/cloud-init/m/tok/user-data') res.end(userData(record, `${base}/cloud-init/m/tok/`));
      else if (req.method === 'GET' && url === '/cloud-init/m/tok/meta-data') res.end(metaData(record, 'session0123456789'));
      else if (req.method === 'POST' && url === '/cloud-init/m/tok/phone-home') {
        phoneHomes.push(body);
        res.end('ok\n');
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const kernelHostname = join(dir, 'kernel-hostname');
  writeFileSync(kernelHostname, 'ramboot-525400123456\n');
  const state = join(dir, 'state');
  const env2 = {
    RAMBOOT_CMDLINE: `console=ttyS0 ds=nocloud-net;s=${base}/cloud-init/m/tok/`,
    RAMBOOT_NOCLOUD_ROOT: prefix,
    RAMBOOT_NOCLOUD_STATE: state,
    RAMBOOT_HOSTNAME_FILE: kernelHostname,
    RAMBOOT_NOCLOUD_TRIES: '2',
  };
  const r = await runScript(join(FILES, 'ramboot-nocloud'), ['keys'], env2);
  t.equal(r.code, 0, r.stderr);
  t.equal(readFileSync(join(prefix, 'root/.ssh/authorized_keys'), 'utf8'), userKeys.map((k) => `${k}\n`).join(''), 'root gets exactly the registered keys (quoted comments too)');
  t.equal(statSync(join(prefix, 'root/.ssh/authorized_keys')).mode & 0o777, 0o600);
  t.equal(statSync(join(prefix, 'root/.ssh')).mode & 0o777, 0o700);
  t.equal(readFileSync(kernelHostname, 'utf8'), 'web1\n', 'hostname set');
  t.equal(readFileSync(join(prefix, 'etc/hostname'), 'utf8'), 'web1\n');
  t.equal(readFileSync(join(prefix, 'etc/hosts'), 'utf8'), '127.0.0.1\tlocalhost\n127.0.1.1\tweb1.example.com web1\n');
  t.equal(phoneHomes.length, 0, 'keys step: no phone_home (sshd may not be up yet; cloud-init does it in the cloud flavour)');
  t.same(gets.sort(), ['/cloud-init/m/tok/meta-data', '/cloud-init/m/tok/user-data'], 'seed fetched once');
  t.equal(statSync(state).mode & 0o777, 0o700, 'the kept seed is private');
  t.equal(statSync(join(state, 'user-data')).mode & 0o777, 0o600);

  const ph = await runScript(join(FILES, 'ramboot-nocloud'), ['phone-home'], env2);
  t.equal(ph.code, 0, ph.stderr);
  t.equal(gets.length, 2, 'phone-home reads the kept seed: no second fetch');
  t.equal(phoneHomes.length, 1, 'phoned home once');
  const form = Object.fromEntries(new URLSearchParams(phoneHomes[0] ?? ''));
  t.equal(form['hostname'], 'web1');
  t.equal(form['fqdn'], 'web1.example.com');
  t.match(form['instance_id'] ?? '', /^ramboot-525400123456-/);
  const hostKeys = hostKeysFromPhoneHome(form);
  t.equal(hostKeys.length, 2, 'the server reads both host keys from the post');
  t.match(hostKeys[0] ?? '', /^ssh-ed25519 /);

  const all = await runScript(join(FILES, 'ramboot-nocloud'), [], { ...env2, RAMBOOT_NOCLOUD_STATE: join(dir, 'state2') });
  t.equal(all.code, 0, all.stderr);
  t.equal(gets.length, 4, 'no argument: fetches the seed');
  t.equal(phoneHomes.length, 2, 'and phones home');
  const usage = await runScript(join(FILES, 'ramboot-nocloud'), ['bogus'], env2);
  t.equal(usage.code, 2, 'unknown step: usage error');
  t.match(usage.stderr, /usage: ramboot-nocloud/);

  const none = await runScript(join(FILES, 'ramboot-nocloud'), [], { RAMBOOT_CMDLINE: 'quiet', RAMBOOT_NOCLOUD_ROOT: prefix, RAMBOOT_NOCLOUD_STATE: state });
  t.equal(none.code, 0, 'no seed: nothing to do, not an error');
  const bad = await runScript(join(FILES, 'ramboot-nocloud'), [], {
    RAMBOOT_CMDLINE: `ds=nocloud-net;s=${base}/missing/`, RAMBOOT_NOCLOUD_ROOT: prefix, RAMBOOT_NOCLOUD_TRIES: '1', RAMBOOT_NOCLOUD_STATE: join(dir, 'state3'),
  });
  t.equal(bad.code, 1, 'seed unreachable: the unit fails (visible in systemctl --failed)');
  t.match(bad.stderr, /cannot fetch/);
});

t.test('ramboot-nocloud: a seed without keys or hostname in user-data, /etc/hosts without a final newline', async (t) => {
  const dir = tempDir(t, 'nocloud-min');
  const prefix = join(dir, 'root');
  mkdirSync(join(prefix, 'root/.ssh'), { recursive: true });
  mkdirSync(join(prefix, 'etc'), { recursive: true });
  writeFileSync(join(prefix, 'root/.ssh/authorized_keys'), 'ssh-ed25519 AAAAold stale\n');
  writeFileSync(join(prefix, 'etc/hosts'), '127.0.0.1\tlocalhost\n127.0.1.1\told\n::1\tlocalhost');
  const server = createServer((req, res) => {
    if (req.url === '/s/user-data') res.end('#cloud-config\nssh_authorized_keys: []\nruncmd:\n  - [echo, "- ssh-rsa AAAAnot-a-key-item"]\n');
    else if (req.url === '/s/meta-data') res.end("instance-id: i-1\nlocal-hostname: 'node7.lab'\n");
    else { res.statusCode = 404; res.end(); }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const kernelHostname = join(dir, 'kernel-hostname');
  const r = await runScript(join(FILES, 'ramboot-nocloud'), ['keys'], {
    RAMBOOT_CMDLINE: `ds=nocloud-net;s=http://127.0.0.1:${(server.address() as AddressInfo).port}/s/`,
    RAMBOOT_NOCLOUD_ROOT: prefix, RAMBOOT_NOCLOUD_STATE: join(dir, 'state'), RAMBOOT_HOSTNAME_FILE: kernelHostname, RAMBOOT_NOCLOUD_TRIES: '2',
  });
  t.equal(r.code, 0, r.stderr);
  t.equal(readFileSync(join(prefix, 'root/.ssh/authorized_keys'), 'utf8'), '', 'no keys in the seed: none for root (the stale one is gone)');
  t.equal(statSync(join(prefix, 'root/.ssh/authorized_keys')).mode & 0o777, 0o600);
  t.match(r.stderr, /0 SSH key\(s\) for root/);
  t.equal(readFileSync(kernelHostname, 'utf8'), 'node7\n', 'local-hostname from meta-data, quotes removed');
  t.equal(readFileSync(join(prefix, 'etc/hosts'), 'utf8'), '127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tnode7.lab node7\n', 'the last line kept without its newline, 127.0.1.1 replaced');
});

t.test('ramboot-sshd: adopts the early sshd once (alive, the same binary), else starts sshd with SSHD_OPTS', async (t) => {
  const dir = tempDir(t, 'ramboot-sshd');
  const early = join(dir, 'early-sshd.pid');
  const sleepExe = realpathSync('/bin/sleep');
  // a live process standing in for /init's sshd: the check is on its executable
  const live = spawn(sleepExe, ['60'], { stdio: 'ignore' });
  t.teardown(() => { live.kill('SIGKILL'); });
  const run = (env: Record<string, string>) => spawnSync(join(FILES, 'ramboot-sshd'), [], { encoding: 'utf8', env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', RAMBOOT_EARLY_SSHD: early, ...env } });

  writeFileSync(early, `${live.pid}\n`);
  const adopted = run({ RAMBOOT_SSHD: sleepExe, SSHD_OPTS: 'not-run' });
  t.equal(adopted.status, 0, adopted.stderr);
  t.match(adopted.stdout, new RegExp(`adopting the sshd started before systemd \\(pid ${live.pid}\\)`));
  t.notOk(existsSync(early), 'the early pid file is used once: a later restart starts a new sshd');

  // later starts: no early pid file -> exec the binary with SSHD_OPTS
  const echoExe = realpathSync('/bin/echo');
  const started = run({ RAMBOOT_SSHD: echoExe, SSHD_OPTS: '-o Port=2222' });
  t.equal(started.status, 0, started.stderr);
  t.equal(started.stdout, '-o Port=2222\n', 'sshd started with SSHD_OPTS split into words');

  // a pid that is not that binary (reused, or another program): not adopted
  writeFileSync(early, `${live.pid}\n`);
  const other = run({ RAMBOOT_SSHD: echoExe });
  t.equal(other.stdout, '\n', 'a live process of another binary is not adopted: sshd is started');
  t.notOk(existsSync(early));
  // garbage in the pid file: not adopted, no error
  writeFileSync(early, '1; rm -rf /\n');
  const bad = run({ RAMBOOT_SSHD: echoExe, SSHD_OPTS: 'fresh' });
  t.equal(bad.stdout, 'fresh\n', 'a malformed pid file is ignored');
});
