import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/ramboot.js', import.meta.url));

/** Run the CLI to completion (these invocations must exit by themselves). */
function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('node', [BIN, ...args], { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

t.test('serve: bad configuration exits 2 naming the problem, before touching anything', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const cases: [string[], RegExp][] = [
    [['--http-listen', 'nonsense'], /httpListen: "nonsense" is not ADDR:PORT/],
    [['--public-url', 'gopher://x'], /publicUrl/],
    [['--unknown-boot', 'maybe'], /unknownMachines\.boot/],
    [['--config', join(dir, 'missing.yaml')], /config file .*missing\.yaml/],
  ];
  for (const [args, re] of cases) {
    const r = await cli(['serve', '--data-dir', join(dir, 'data'), '--no-tftp', ...args]);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.stderr, re);
  }
  const { readdir } = await import('node:fs/promises');
  t.same(await readdir(dir), [], 'no data dir was created');
});

t.test('serve: startup failures exit 1 with the reason', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => blocker.close(() => r())));
  const port = (blocker.address() as { port: number }).port;
  const busy = await cli(['serve', '--data-dir', join(dir, 'a'), '--no-tftp', '--http-listen', `127.0.0.1:${port}`]);
  t.equal(busy.code, 1);
  t.match(busy.stderr, /address already in use/);
  t.match(busy.stdout, /"event":"startup.failed"/, 'also logged as JSON');

  const noIpxe = await cli(['serve', '--data-dir', join(dir, 'b'), '--http-listen', '127.0.0.1:0', '--tftp-listen', '127.0.0.1:0', '--ipxe-dir', join(dir, 'nope')]);
  t.equal(noIpxe.code, 1);
  t.match(noIpxe.stderr, /--ipxe-dir .*nope is not a directory/);

  const tokenFile = join(dir, 'token');
  await writeFile(tokenFile, 'short');
  await chmod(tokenFile, 0o600);
  const shortToken = await cli(['serve', '--data-dir', join(dir, 'c'), '--no-tftp', '--http-listen', '127.0.0.1:0', '--api-token-file', tokenFile]);
  t.equal(shortToken.code, 1);
  t.match(shortToken.stderr, /shorter than 16/);
  await writeFile(tokenFile, 'a-long-enough-token-0123456789');
  await chmod(tokenFile, 0o644);
  const openToken = await cli(['serve', '--data-dir', join(dir, 'd'), '--no-tftp', '--http-listen', '127.0.0.1:0', '--api-token-file', tokenFile]);
  t.equal(openToken.code, 1);
  t.match(openToken.stderr, /readable by group\/others/);
});

t.test('help lists the contract flags', async (t) => {
  const r = await cli(['serve', '--help']);
  t.equal(r.code, 0);
  for (const flag of ['--data-dir', '--http-listen', '--public-url', '--api-token-file', '--tftp-listen', '--no-tftp', '--ipxe-dir']) t.match(r.stdout, flag);
});
