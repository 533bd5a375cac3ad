import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './lib/free-port.js';
import { startTestServer, writeFakeImage, type TestServer } from './lib/in-process-server.js';
import { ManagedProcess } from './lib/process.js';
import { simulateBoot, SIM_HOST_KEY } from './lib/simulated-boot.js';
import { makeKeyPair } from './lib/ssh-keys.js';

const BIN = fileURLToPath(new URL('../bin/ramboot.js', import.meta.url));
const key = makeKeyPair().pub;
const MAC = '52:54:00:55:00:01';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `ramboot machines ...` to completion, with the environment given (no RAMBOOT_* from ours). */
function machines(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RAMBOOT_')));
  return new Promise((resolve) => {
    execFile('node', [BIN, 'machines', ...args], { env: { ...base, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

async function setup(t: Test): Promise<{ s: TestServer; dir: string; conn: string[]; keyFile: string }> {
  const s = await startTestServer(t);
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-mcli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const keyFile = join(dir, 'id.pub');
  await writeFile(keyFile, `# admin\n${key}\n`);
  return { s, dir, keyFile, conn: ['--server', s.url, '--token-file', s.rb.apiTokenFile] };
}

t.test('add, ls, show, set, known-hosts, events, rm: for people and with --json', async (t) => {
  const { s, keyFile, conn } = await setup(t);
  await writeFakeImage(s.dataDir, 'default');

  const empty = await machines(['ls', ...conn]);
  t.equal(empty.code, 0);
  t.equal(empty.stdout, 'no machines\n');

  const add = await machines(['add', MAC.toUpperCase().replace(/:/g, '-'), '--key', keyFile, '--hostname', 'web1', '--boot', 'once', ...conn]);
  t.equal(add.code, 0, add.stderr);
  t.equal(add.stdout, `registered ${MAC} (boot: once, image: default)\n`);
  const again = await machines(['add', MAC, '--key', keyFile, ...conn]);
  t.equal(again.code, 1);
  t.match(again.stderr, /already registered.*machines set/);

  const ls = await machines(['ls', ...conn]);
  t.equal(ls.code, 0);
  t.match(ls.stdout, /^MAC\s+HOSTNAME\s+BOOT\s+IMAGE\s+STATE\s+IP\s+UPDATED\n/);
  t.match(ls.stdout, new RegExp(`${MAC}\\s+web1\\s+once\\s+default\\s+registered\\s+-\\s+\\d{4}-`));
  const lsJson = await machines(['ls', '--json', ...conn]);
  t.match(JSON.parse(lsJson.stdout), [{ mac: MAC, hostname: 'web1', boot: 'once', sshKeys: [key.split(' ').slice(0, 2).join(' ') + ' admin@example'] }]);

  const show = await machines(['show', MAC, ...conn]);
  t.match(show.stdout, /^mac\s+52:54:00:55:00:01\nhostname\s+web1\nboot\s+once\n/);
  t.match(show.stdout, /ssh keys\s+ssh-ed25519 admin@example/);
  t.match(JSON.parse((await machines(['show', MAC, '--json', ...conn])).stdout), { mac: MAC, status: { state: 'registered' } });

  const set = await machines(['set', MAC, 'boot=ramboot', 'kernelArgs=quiet', 'userData={"packages":["htop"]}', ...conn]);
  t.equal(set.code, 0, set.stderr);
  t.match(set.stdout, /^updated 52:54:00:55:00:01: boot, kernelArgs, userData \(revision 2\)\n$/);
  const setJson = await machines(['--json', 'set', MAC, 'kernelArgs=', ...conn]);
  const rec = JSON.parse(setJson.stdout) as Record<string, unknown>;
  t.notOk(rec['kernelArgs'], 'empty value removes');
  t.same(rec['userData'], { packages: ['htop'] });

  const noKeys = await machines(['known-hosts', MAC, ...conn]);
  t.equal(noKeys.code, 1);
  t.match(noKeys.stderr, /no host keys yet/);

  await simulateBoot(s.url, MAC);
  const kh = await machines(['known-hosts', MAC, ...conn]);
  t.equal(kh.code, 0, kh.stderr);
  t.equal(kh.stdout, `127.0.0.1,web1 ${SIM_HOST_KEY.split(' ').slice(0, 2).join(' ')}\n`);
  t.same(JSON.parse((await machines(['known-hosts', MAC, '--json', ...conn])).stdout), { mac: MAC, knownHosts: [kh.stdout.trim()] });

  const ev = await machines(['events', MAC, ...conn]);
  t.equal(ev.code, 0);
  t.match(ev.stdout, /^\d{4}-\S+Z\s+info\s+api\.registered\s+machine registered/);
  t.match(ev.stdout, /phone-home\.ready/);
  const evJson = JSON.parse((await machines(['events', MAC, '--json', '--limit', '2', ...conn])).stdout) as { events: { event: string }[] };
  t.equal(evJson.events.length, 2);
  t.equal(evJson.events.at(-1)!.event, 'phone-home.ready');

  const rmm = await machines(['rm', MAC, ...conn]);
  t.equal(rmm.code, 0);
  t.equal(rmm.stdout, `removed ${MAC}\n`);
  const gone = await machines(['show', MAC, ...conn]);
  t.equal(gone.code, 1);
  t.match(gone.stderr, /^ramboot machines show: machine 52:54:00:55:00:01 is not registered\n$/);
  const rmAgain = await machines(['rm', MAC, '--json', ...conn]);
  t.equal(rmAgain.code, 1, '404 is exit 1');
  t.match(rmAgain.stderr, /not registered/);
});

t.test('add adopts a discovered MAC; RAMBOOT_SERVER and RAMBOOT_TOKEN_FILE work', async (t) => {
  const { s, keyFile } = await setup(t);
  await fetch(`${s.url}/ipxe?mac=02:00:00:00:00:07`);
  const env = { RAMBOOT_SERVER: s.url, RAMBOOT_TOKEN_FILE: s.rb.apiTokenFile };
  t.match((await machines(['ls'], env)).stdout, /02:00:00:00:00:07\s+-\s+local\s+default\s+discovered/);
  const adopt = await machines(['add', '02:00:00:00:00:07', '--key', keyFile, '--boot', 'once'], env);
  t.equal(adopt.code, 0, adopt.stderr);
  t.equal(adopt.stdout, 'adopted 02:00:00:00:00:07 (boot: once, image: default)\n');
  t.match((await s.api('GET', '/api/v1/machines/02:00:00:00:00:07')).json, { discovered: false, boot: 'once', status: { state: 'registered' } });
});

t.test('events --follow prints the timeline, then live events, until stopped', async (t) => {
  const { s, keyFile, conn } = await setup(t);
  await writeFakeImage(s.dataDir, 'default');
  await machines(['add', MAC, '--key', keyFile, ...conn]);
  const p = new ManagedProcess({ name: 'events-follow', argv: ['node', BIN, 'machines', 'events', MAC, '--follow', ...conn] });
  t.teardown(() => p.stop());
  await p.waitFor(/api\.registered/, { timeoutMs: 30_000 });
  await simulateBoot(s.url, MAC, { until: 'script' });
  await p.waitFor(/ipxe\.script\s+served boot script/, { timeoutMs: 30_000 });
  await s.api('PATCH', `/api/v1/machines/${MAC}`, { boot: 'local' });
  await p.waitFor(/api\.updated\s+machine updated: boot/, { timeoutMs: 30_000 });
  const info = await p.stop();
  t.equal(info.signal ?? info.code, info.signal ? 'SIGTERM' : 0, 'stopped cleanly');
  t.equal(p.output().split('\n').filter((l) => /api\.registered/.test(l)).length, 1, 'no event printed twice');

  const j = new ManagedProcess({ name: 'events-follow-json', argv: ['node', BIN, 'machines', 'events', MAC, '-f', '--json', ...conn] });
  t.teardown(() => j.stop());
  await j.waitFor(/"event":"api\.updated"/, { timeoutMs: 30_000 });
  await s.api('PATCH', `/api/v1/machines/${MAC}`, { hostname: 'x' });
  const line = await j.waitFor(/^(\{.*"message":"machine updated: hostname".*\})$/, { timeoutMs: 30_000 });
  t.match(JSON.parse(line[1]!), { event: 'api.updated', level: 'info' }, 'one JSON object per line');
});

t.test('errors: server down, bad token, missing token file, bad MAC, validation, usage', async (t) => {
  const { s, dir, keyFile, conn } = await setup(t);
  const port = await freePort();
  const down = await machines(['ls', '--server', `http://127.0.0.1:${port}`, '--token-file', s.rb.apiTokenFile]);
  t.equal(down.code, 1);
  t.equal(down.stderr, `ramboot machines ls: cannot reach ramboot at http://127.0.0.1:${port} (connection refused)\n`);

  const wrong = join(dir, 'wrong-token');
  await writeFile(wrong, 'not-the-token-0123456789\n');
  const unauth = await machines(['ls', '--server', s.url, '--token-file', wrong]);
  t.equal(unauth.code, 1);
  t.match(unauth.stderr, /refused the API token from .*wrong-token: invalid API token/);

  const noFile = await machines(['ls', '--server', s.url, '--token-file', join(dir, 'nope')]);
  t.equal(noFile.code, 2);
  t.match(noFile.stderr, /cannot read the API token file .*nope: no such file/);

  const badServer = await machines(['ls', '--server', 'ftp://x', '--token-file', s.rb.apiTokenFile]);
  t.equal(badServer.code, 2);
  t.match(badServer.stderr, /must be an http:\/\/ or https:\/\/ URL/);

  const badMac = await machines(['show', 'zz:zz', ...conn]);
  t.equal(badMac.code, 2);
  t.match(badMac.stderr, /"zz:zz" is not a MAC address/);

  const invalidHost = await machines(['add', MAC, '--key', keyFile, '--hostname', '-bad-', ...conn]);
  t.equal(invalidHost.code, 2, 'server validation (400) is exit 2');
  t.match(invalidHost.stderr, /^ramboot machines add: invalid request: .*hostname/);

  const badKeyFile = join(dir, 'bad.pub');
  await writeFile(badKeyFile, 'ssh-ed25519 notbase64!!\n');
  const badKey = await machines(['add', MAC, '--key', badKeyFile, ...conn]);
  t.equal(badKey.code, 2);
  t.match(badKey.stderr, /invalid request: sshKeys/);
  t.equal((await machines(['add', MAC, '--key', join(dir, 'missing.pub'), ...conn])).code, 2);

  await machines(['add', MAC, '--key', keyFile, ...conn]);
  const cases = [
    [['set', MAC, 'colour=blue'], /unknown field "colour"/],
    [['set', MAC, 'boot=sometimes'], /boot=sometimes: must be ramboot, once or local/],
    [['set', MAC, 'nonsense'], /"nonsense" is not field=value/],
    [['set', MAC, 'userData=[1'], /userData= takes a JSON object/],
    [['set', MAC, 'userData=[1]'], /invalid request: userData/],
    [['set', MAC, 'image=nope'], /invalid request: image/],
    [['events', MAC, '--limit', 'lots'], /--limit must be a number/],
  ] as const;
  // independent invocations run side by side (each CLI start costs ~1-3 s of TypeScript loading)
  const results = await Promise.all(cases.map(([args]) => machines([...args, ...conn])));
  cases.forEach(([args, re], i) => {
    t.equal(results[i]!.code, 2, args.join(' '));
    t.match(results[i]!.stderr, re);
  });
  const usage = await machines(['add', MAC, ...conn]);
  t.equal(usage.code, 2, 'missing required option is a usage error');
  t.match(usage.stderr, /--key <file>/);
  const unknownVerb = await machines(['frobnicate', ...conn]);
  t.equal(unknownVerb.code, 2);
  const help = await machines(['--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /ls[\s\S]*show[\s\S]*add[\s\S]*set[\s\S]*rm[\s\S]*known-hosts[\s\S]*events/);

  const followDown = await machines(['events', MAC, '--follow', '--server', `http://127.0.0.1:${port}`, '--token-file', s.rb.apiTokenFile]);
  t.equal(followDown.code, 1);
  t.match(followDown.stderr, /cannot reach ramboot/);
  const followGone = await machines(['events', '52:54:00:55:00:77', '--follow', ...conn]);
  t.equal(followGone.code, 1);
  t.match(followGone.stderr, /not registered/);
});
