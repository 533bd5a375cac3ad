import t from 'tap';
import { copyFile, cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, runOk } from '../common/run.js';
import { freePort } from './lib/free-port.js';
import { REPO_ROOT } from './lib/paths.js';
import { ManagedProcess } from './lib/process.js';
import { needExecutables, requirements } from './lib/requirements.js';

const UNIT = join(REPO_ROOT, 'deploy', 'ramboot.service');

/** [Service] ExecStart (split on spaces: the unit uses no quoting) and Environment= pairs. */
function serviceCommand(unit: string): { argv: string[]; env: Record<string, string> } {
  const exec = /^ExecStart=(.+)$/m.exec(unit)?.[1];
  if (!exec) throw new Error('no ExecStart');
  const env: Record<string, string> = {};
  for (const m of unit.matchAll(/^Environment=([A-Z_][A-Z0-9_]*)=(.*)$/gm)) env[m[1]!] = m[2]!;
  return { argv: exec.trim().split(/\s+/), env };
}

t.test('systemd-analyze verify accepts the unit (and rejects a broken one)', async (t) => {
  if (!needExecutables(t, [{ exe: 'systemd-analyze', pkg: 'systemd' }])) return;
  const ok = await run('systemd-analyze', ['verify', UNIT]);
  t.equal(ok.code, 0, ok.stderr);
  t.equal(`${ok.stdout}${ok.stderr}`.trim(), '', 'no warnings');

  const dir = await mkdtemp(join(tmpdir(), 'ramboot-unit-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const broken = (await readFile(UNIT, 'utf8')).replace(/^ExecStart=\/usr\/bin\/node /m, 'ExecStart=/nonexistent/node ');
  await writeFile(join(dir, 'ramboot.service'), broken);
  const bad = await run('systemd-analyze', ['verify', join(dir, 'ramboot.service')]);
  t.not(bad.code, 0, 'a missing executable is caught: verify really checks');
});

t.test('the unit hardens the service as intended', async (t) => {
  const unit = await readFile(UNIT, 'utf8');
  for (const line of [
    'CapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW',
    'AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'DynamicUser=yes',
    'StateDirectory=ramboot',
  ]) t.match(unit, new RegExp(`^${line}$`, 'm'), line);
  t.match(serviceCommand(unit).argv, ['/usr/bin/node', '/opt/ramboot/dist/cli/main.js', 'serve', '--data-dir', '/var/lib/ramboot']);
});

t.test('the compiled server starts from the unit\'s command line and answers the API', async (t) => {
  if (!requirements(t, ['ipxe'])) return;
  // an install laid out as /opt/ramboot would be: dist/ from `npm run build`, boot-assets/, node_modules/
  const opt = await mkdtemp(join(tmpdir(), 'ramboot-opt-'));
  const data = await mkdtemp(join(tmpdir(), 'ramboot-state-'));
  t.teardown(async () => {
    await rm(opt, { recursive: true, force: true });
    await rm(data, { recursive: true, force: true });
  });
  await runOk(join(REPO_ROOT, 'node_modules', '.bin', 'tsc'), ['-p', join(REPO_ROOT, 'tsconfig.build.json'), '--outDir', join(opt, 'dist')], { cwd: REPO_ROOT });
  await copyFile(join(REPO_ROOT, 'builder', 'mmdebstrap-hook.sh'), join(opt, 'dist', 'builder', 'mmdebstrap-hook.sh'));
  await cp(join(REPO_ROOT, 'boot-assets'), join(opt, 'boot-assets'), { recursive: true });
  await copyFile(join(REPO_ROOT, 'package.json'), join(opt, 'package.json'));
  await symlink(join(REPO_ROOT, 'node_modules'), join(opt, 'node_modules'));
  await mkdir(join(opt, 'var'), { recursive: true });

  const { argv, env } = serviceCommand(await readFile(UNIT, 'utf8'));
  const local = argv.map((a) => a.replace('/opt/ramboot', opt).replace('/var/lib/ramboot', data));
  const [httpPort, tftpPort] = [await freePort(), await freePort()];
  // the unit's environment, with its listen addresses moved to loopback ports
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('RAMBOOT_')));
  const p = new ManagedProcess({
    name: 'ramboot-service',
    argv: local,
    cwd: '/',
    env: { ...base, ...env, RAMBOOT_HTTP_LISTEN: `127.0.0.1:${httpPort}`, RAMBOOT_TFTP_LISTEN: `127.0.0.1:${tftpPort}`, RAMBOOT_PUBLIC_URL: `http://127.0.0.1:${httpPort}` },
  });
  t.teardown(() => p.stop());
  await p.waitFor(/"event":"tftp\.listening"/, { timeoutMs: 60_000 });
  t.notMatch(p.output(), /tsx/, 'no TypeScript loader involved');
  const token = (await readFile(join(data, 'api-token'), 'utf8')).trim();
  const res = await fetch(`http://127.0.0.1:${httpPort}/api/v1/machines`, { headers: { authorization: `Bearer ${token}` } });
  t.equal(res.status, 200);
  t.same(await res.json(), { machines: [], broken: [] });
  const page = await fetch(`http://127.0.0.1:${httpPort}/`);
  t.equal(page.status, 200, 'the admin page is found from dist/ (boot-assets one level up)');
  t.match(await page.text(), /<title>ramboot<\/title>/);
  const info = await p.stop();
  t.equal(info.code, 0, 'stops cleanly on SIGTERM');
});
