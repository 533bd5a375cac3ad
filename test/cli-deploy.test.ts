import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestServer, writeFakeImage, type TestServer } from './lib/in-process-server.js';
import { makeKeyPair } from './lib/ssh-keys.js';
import { tempDir } from './lib/temp-dir.js';
import { freePort } from './lib/free-port.js';

const BIN = fileURLToPath(new URL('../bin/ramboot.js', import.meta.url));
const MAC = '52:54:00:c1:10:01';
const key = makeKeyPair().pub;

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI; `onOutput` sees stdout + stderr so far as they come (to act when the deploy is set). */
function cli(args: string[], env: NodeJS.ProcessEnv = {}, onOutput?: (all: string) => void): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, RAMBOOT_SERVER: '', RAMBOOT_TOKEN_FILE: '', ...env } });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      onOutput?.(stdout + stderr);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      onOutput?.(stdout + stderr);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function setup(t: Parameters<typeof tempDir>[0]): Promise<{ s: TestServer; args: string[]; dir: string }> {
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default');
  const dir = tempDir(t, 'ramboot-cli-deploy');
  const tokenFile = join(dir, 'token');
  await writeFile(tokenFile, `${s.token}\n`);
  return { s, args: ['--server', s.url, '--token-file', tokenFile], dir };
}

/** A seed path of a fresh boot session of MAC (what the RAM OS has on its kernel line). */
async function seed(s: TestServer): Promise<string> {
  const sc = await (await fetch(`${s.url}/ipxe?mac=${MAC}&platform=pcbios&memsize=4096`)).text();
  return new URL(/;s=(\S+\/)/.exec(sc)?.[1] ?? '').pathname;
}

async function report(s: TestServer, seedPath: string, body: Record<string, unknown>): Promise<number> {
  const r = await fetch(`${s.url}${seedPath}deploy/status`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return r.status;
}

t.test('artifacts upload | ls | rm', async (t) => {
  const { s, args, dir } = await setup(t);
  const file = join(dir, 'disk.img.zst');
  const data = Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(3 << 20, 9)]);
  await writeFile(file, data);
  const up = await cli(['artifacts', 'upload', file, ...args]);
  t.equal(up.code, 0, up.stderr);
  t.match(up.stdout, /created artifact disk\.img\.zst: 3\.0 MiB zstd sha256 [0-9a-f]{64}/);
  t.match(up.stderr, /upload disk\.img\.zst .*100%.*3\.0 MiB \/ 3\.0 MiB/, 'progress on stderr');
  const js = await cli(['artifacts', 'upload', file, '--name', 'img2', '--json', ...args]);
  t.equal(js.code, 0);
  t.match(JSON.parse(js.stdout), { name: 'img2', size: data.length, format: 'zstd', sha256: createHash('sha256').update(data).digest('hex') });
  const again = await cli(['artifacts', 'upload', file, '--name', 'img2', '--create-only', ...args]);
  t.equal(again.code, 2, 'create-only on an existing name');
  t.match(again.stderr, /exists/);
  const bad = await cli(['artifacts', 'upload', file, '--name', 'Bad/Name', ...args]);
  t.equal(bad.code, 2);
  const ls = await cli(['artifacts', 'ls', ...args]);
  t.match(ls.stdout, /^NAME +SIZE +FORMAT/);
  t.match(ls.stdout, /disk\.img\.zst +3\.0 MiB +zstd/);
  const lsj = await cli(['artifacts', 'ls', '--json', ...args]);
  t.equal(lsj.stdout.trim().split('\n').length, 2);
  t.equal((await cli(['artifacts', 'rm', 'img2', ...args])).code, 0);
  const gone = await cli(['artifacts', 'rm', 'img2', ...args]);
  t.equal(gone.code, 1);
  t.match(gone.stderr, /no artifact img2/);
});

t.test('deploy: sets the deploy, follows progress to success (exit 0) or failure (exit 1)', async (t) => {
  const { s, args } = await setup(t);
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], boot: 'once' });
  await fetch(`${s.url}/api/v1/artifacts/img`, { method: 'PUT', headers: { authorization: `Bearer ${s.token}` }, body: 'raw disk' });
  const seedPath = await seed(s);

  // The "agent": once the CLI says the deploy is set, report like ramboot-deploy does.
  let agent: Promise<void> | undefined;
  const agentRun = (final: Record<string, unknown>) => async () => {
    const m = (await s.api('GET', `/api/v1/machines/${MAC}`)).json as { deploy: { id: string } };
    const id = m.deploy.id;
    t.equal(await report(s, seedPath, { id, state: 'started', stage: 'select-disk', message: 'deploy started' }), 204);
    t.equal(await report(s, seedPath, { id, state: 'progress', stage: 'write', bytes: 512 << 20, total: 1 << 30, rateBps: 100 << 20, etaSeconds: 5, seconds: 5, disk: '/dev/vda' }), 204);
    await new Promise((r) => setTimeout(r, 2100)); // the server keeps one progress event per ~2 s
    t.equal(await report(s, seedPath, { id, state: 'progress', stage: 'verify', bytes: 1 << 30, total: 1 << 30, rateBps: 100 << 20, etaSeconds: 0, seconds: 10, disk: '/dev/vda' }), 204);
    t.equal(await report(s, seedPath, { id, ...final }), 204);
  };
  const ok = await cli(['deploy', MAC, '--artifact', 'img', '--disk', 'serial=QM0001', '--after', 'reboot', '--grow', ...args], {}, (err) => {
    if (!agent && /deploy \S+ set on/.test(err)) agent = agentRun({ state: 'succeeded', stage: 'finish', bytes: 1 << 30, seconds: 12, disk: '/dev/vda' })();
  });
  await agent;
  t.equal(ok.code, 0, ok.stderr);
  t.match(ok.stderr, /deploy\.started/);
  t.match(ok.stderr, /deploy write +\[#+-*\] +50% +512\.0 MiB \/ 1\.0 GiB +100\.0 MiB\/s +ETA 0:05/, 'progress bar with bytes, percent, rate, ETA');
  t.match(ok.stdout, /deployed 52:54:00:c1:10:01: 1\.0 GiB in 0:12 to \/dev\/vda/);
  const m = (await s.api('GET', `/api/v1/machines/${MAC}`)).json as { boot: string; deploy: Record<string, unknown> };
  t.match(m.deploy, { artifact: 'img', disk: { serial: 'QM0001' }, after: 'reboot', grow: true });
  t.equal(m.boot, 'local');

  await s.api('PATCH', `/api/v1/machines/${MAC}`, { boot: 'once' });
  const seedPath2 = await seed(s);
  let agent2: Promise<void> | undefined;
  let id2 = '';
  const fail = cli(['deploy', MAC, '--artifact', 'img', '--json', ...args], {}, (out) => {
    const set = /"event":"deploy\.set","id":"([^"]+)"/.exec(out);
    if (agent2 || !set?.[1]) return;
    id2 = set[1];
    agent2 = (async () => {
      t.equal(await report(s, seedPath2, { id: id2, state: 'started', stage: 'select-disk' }), 204);
      t.equal(await report(s, seedPath2, { id: id2, state: 'failed', stage: 'verify', message: 'sha256 mismatch' }), 204);
    })();
  });
  const f = await fail;
  await agent2;
  t.equal(f.code, 1);
  const lines = f.stdout.trim().split('\n').map((l) => JSON.parse(l) as { event: string; data?: { stage?: string } });
  t.match(lines[0], { event: 'deploy.set', id: id2 });
  t.match(lines.at(-1), { event: 'deploy.failed', data: { stage: 'verify' } }, 'one JSON object per event, ending with the failure');
});

t.test('deploy: clear errors and exit codes', async (t) => {
  const { s, args, dir } = await setup(t);
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [key], boot: 'once' });
  const cases: [string[], number, RegExp][] = [
    [['deploy', MAC, ...args], 2, /either --artifact NAME or --url URL --sha256 HEX/],
    [['deploy', MAC, '--url', 'http://x/y', ...args], 2, /--url needs --sha256/],
    [['deploy', 'not-a-mac', '--artifact', 'a', ...args], 2, /MAC/],
    [['deploy', MAC, '--artifact', 'a', '--after', 'explode', ...args], 2, /--after must be one of/],
    [['deploy', MAC, '--artifact', 'a', '--disk', 'size=3', ...args], 2, /--disk/],
    [['deploy', MAC, '--artifact', 'missing', ...args], 2, /invalid request: deploy\.artifact: no artifact "missing"/],
    [['deploy', MAC, '--url', 'ftp://x/y', '--sha256', 'a'.repeat(64), ...args], 2, /invalid request: .*url/],
    [['deploy', '52:54:00:00:00:99', '--url', 'http://x/y', '--sha256', 'a'.repeat(64), ...args], 1, /not registered/],
  ];
  for (const [argv, code, re] of cases) {
    const r = await cli(argv);
    t.equal(r.code, code, argv.slice(0, 4).join(' '));
    t.match(r.stderr, re, argv.slice(0, 4).join(' '));
  }
  const wrongToken = join(dir, 'wrong');
  await writeFile(wrongToken, 'nope\n');
  const r401 = await cli(['deploy', MAC, '--artifact', 'a', '--server', s.url, '--token-file', wrongToken]);
  t.equal(r401.code, 1);
  t.match(r401.stderr, /refused the API token/);
  const port = await freePort();
  const down = await cli(['artifacts', 'ls', '--server', `http://127.0.0.1:${port}`, '--token-file', wrongToken]);
  t.equal(down.code, 1);
  t.match(down.stderr, /cannot reach ramboot at http:\/\/127\.0\.0\.1:\d+ \(connection refused\)/);
  const noToken = await cli(['artifacts', 'ls', '--server', s.url, '--token-file', join(dir, 'absent')]);
  t.equal(noToken.code, 2);
  t.match(noToken.stderr, /cannot read the API token/);
  const env = await cli(['artifacts', 'ls'], { RAMBOOT_SERVER: s.url, RAMBOOT_TOKEN_FILE: wrongToken });
  t.match(env.stderr, /refused the API token from .*wrong/, 'RAMBOOT_SERVER / RAMBOOT_TOKEN_FILE');
});
