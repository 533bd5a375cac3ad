import t, { type Test } from 'tap';
import { createServer, type Server } from 'node:http';
import { mkdtemp, mkdir, writeFile, readFile, rm, readdir, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { parseBuildOptions } from './options.js';
import { classifyFailure } from './mmdebstrap.js';
import { requirements } from '../test/lib/requirements.js';
import { freePort } from '../test/lib/free-port.js';
import { REPO_ROOT } from '../test/lib/paths.js';

t.test('options: bad input is refused with the flag named', async (t) => {
  t.throws(() => parseBuildOptions({ name: '../etc' }), /--name: image name/);
  t.throws(() => parseBuildOptions({ flavour: 'fat' as 'cloud' }), /--flavour/);
  t.throws(() => parseBuildOptions({ include: 'vim,rm -rf /' }), /--include: "rm -rf \/" is not a Debian package name/);
  t.throws(() => parseBuildOptions({ include: 'a;b' }), /--include/);
  t.throws(() => parseBuildOptions({ suite: 'Bookworm; reboot' }), /--suite/);
  t.throws(() => parseBuildOptions({ mirror: 'ftp://x/debian' }), /--mirror/);
  t.throws(() => parseBuildOptions({ mirror: 'http://a b/debian' }), /--mirror/);
  t.throws(() => parseBuildOptions({ mirror: 'http://u:p@x/debian' }), /--mirror/);
  t.throws(() => parseBuildOptions({ sourceDateEpoch: 'yesterday' }), /SOURCE_DATE_EPOCH/);
  const o = parseBuildOptions({ include: ' htop, tmux ,', mirror: 'http://deb.debian.org/debian/', sourceDateEpoch: '1700000000' });
  t.same(o.include, ['htop', 'tmux']);
  t.equal(o.mirror, 'http://deb.debian.org/debian');
  t.equal(o.name, 'default');
  t.equal(o.flavour, 'cloud');
  t.equal(o.sourceDateEpoch, 1700000000);
  t.match(o.dataDir, /\/var$/);
});

t.test('mmdebstrap failures are mapped to causes', async (t) => {
  const inp = { suite: 'bookworm', mirror: 'http://m/debian' };
  t.equal(classifyFailure('E: Unable to locate package nosuchpkg\nE: apt-get install failed', inp).kind, 'unknown-package');
  t.match(classifyFailure('E: Unable to locate package nosuchpkg', inp).message, /unknown package in suite bookworm: nosuchpkg/);
  t.equal(classifyFailure("E: The repository 'http://m/debian nosuch Release' does not have a Release file.", inp).kind, 'unknown-suite');
  t.equal(classifyFailure("Err:1 http://m/debian bookworm InRelease\n  Temporary failure resolving 'm'", inp).kind, 'mirror-unreachable');
  t.equal(classifyFailure('dpkg: error: No space left on device', inp).kind, 'no-space');
});

interface CliResult { code: number; stdout: string; stderr: string }

function cli(args: string[], opts: { wrap?: string[]; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  const argv = [...(opts.wrap ?? []), process.execPath, join(REPO_ROOT, 'bin', 'ramboot.js'), 'build', ...args];
  return new Promise((resolve, reject) => {
    const [cmd = '', ...rest] = argv;
    // Without tap's NODE_OPTIONS loaders (they write to .tap/, which a non-root child cannot).
    const env = { ...(opts.env ?? process.env) };
    delete env['NODE_OPTIONS'];
    const child = spawn(cmd, rest, { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 255, stdout, stderr });
    });
  });
}

/** A data dir holding a previous image, to check a failed build leaves it alone. */
async function dataDirWithImage(t: Test): Promise<{ dir: string; manifest: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-builderr-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, 'images', 'default'), { recursive: true });
  const manifest = '{"previous":"image"}\n';
  await writeFile(join(dir, 'images', 'default', 'manifest.json'), manifest);
  return { dir, manifest };
}

async function assertIntact(t: Test, dir: string, manifest: string): Promise<void> {
  t.equal(await readFile(join(dir, 'images', 'default', 'manifest.json'), 'utf8'), manifest, 'previous image intact');
  t.same((await readdir(join(dir, 'images'))).sort(), ['default'], 'no leftovers in images/');
  t.same(await readdir(join(dir, 'build')).catch(() => []), [], 'no leftovers in build/');
}

t.test('bad input at the CLI: exit 2, no side effect', async (t) => {
  const { dir, manifest } = await dataDirWithImage(t);
  const r = await cli(['--data-dir', dir, '--include', 'ok,Bad Name']);
  t.equal(r.code, 2);
  t.match(r.stderr, /--include: "Bad Name" is not a Debian package name/);
  await assertIntact(t, dir, manifest);
});

t.test('not root: clear message, exit 2', async (t) => {
  if (!requirements(t, ['root', 'setpriv'])) return;
  const { dir, manifest } = await dataDirWithImage(t);
  await chmod(dir, 0o755);
  const r = await cli(['--data-dir', dir], {
    wrap: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'],
    env: { ...process.env, HOME: '/tmp', TSX_TSCONFIG_PATH: join(REPO_ROOT, 'tsconfig.json') },
  });
  t.equal(r.code, 2, r.stderr.split('\n')[0] ?? '');
  t.match(r.stderr, /must run as root/);
  await assertIntact(t, dir, manifest);
});

t.test('unknown suite and unreachable mirror: named, previous image intact', async (t) => {
  if (!requirements(t, ['root'])) return;
  // A loopback "mirror" that has no such suite.
  const srv: Server = createServer((_req, res) => { res.statusCode = 404; res.end('not found'); });
  const port = await freePort();
  await new Promise<void>((r) => srv.listen(port, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const { dir, manifest } = await dataDirWithImage(t);
  const r1 = await cli(['--data-dir', dir, '--suite', 'nosuchsuite', '--mirror', `http://127.0.0.1:${port}/debian`]);
  t.equal(r1.code, 1, r1.stderr);
  t.match(r1.stderr, /unknown-suite: unknown suite "nosuchsuite"/);
  await assertIntact(t, dir, manifest);

  const closed = await freePort();
  const r2 = await cli(['--data-dir', dir, '--mirror', `http://127.0.0.1:${closed}/debian`]);
  t.equal(r2.code, 1, r2.stderr);
  t.match(r2.stderr, /mirror-unreachable: mirror unreachable: http:\/\/127\.0\.0\.1:\d+\/debian \(ECONNREFUSED\)/);
  await assertIntact(t, dir, manifest);
});

t.test('no space left: refused before building, previous image intact', async (t) => {
  if (!requirements(t, ['root', 'unshare'])) return;
  const { dir, manifest } = await dataDirWithImage(t);
  const small = join(dir, 'small');
  await mkdir(small);
  // A private mount namespace with a 64 MiB tmpfs as the data dir (gone when the process exits).
  const r = await cli(['--data-dir', small], {
    wrap: ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c',
      'mount -t tmpfs -o size=64m ramboot-small "$1" && shift && exec "$@"', 'sh', small],
  });
  t.equal(r.code, 1, r.stderr);
  t.match(r.stderr, /no-space: no space left for a build in .*small: \d+ MiB free, need 3072 MiB/);
  await assertIntact(t, dir, manifest);
});

t.test('unknown package: named after apt resolves it (needs the Debian mirror)', async (t) => {
  if (!requirements(t, ['root'])) return;
  const { dir, manifest } = await dataDirWithImage(t);
  const r = await cli(['--data-dir', dir, '--flavour', 'lean', '--include', 'ramboot-no-such-package']);
  t.equal(r.code, 1, r.stderr.slice(-2000));
  t.match(r.stderr, /unknown-package: unknown package in suite bookworm: ramboot-no-such-package/);
  await assertIntact(t, dir, manifest);
});

t.test('a second build on the same cache while one runs: refused, naming the running build', async (t) => {
  if (!requirements(t, ['root'])) return;
  const { dir, manifest } = await dataDirWithImage(t);
  await mkdir(join(dir, 'cache'), { recursive: true });
  // This test process stands in for the running build: its pid is alive.
  await writeFile(join(dir, 'cache', '.build.lock'), `${process.pid}\n`);
  const r = await cli(['--data-dir', dir]);
  t.equal(r.code, 1, r.stderr.slice(-2000));
  t.match(r.stderr, new RegExp(`busy: another ramboot build \\(pid ${process.pid}\\) is using`));
  t.equal(await readFile(join(dir, 'cache', '.build.lock'), 'utf8'), `${process.pid}\n`, "the running build's lock is left alone");
  await assertIntact(t, dir, manifest);
});
