import t from 'tap';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseListen } from './config.js';

const dir = mkdtempSync(join(tmpdir(), 'ramboot-cfg-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

t.test('embedded defaults', async (t) => {
  const c = loadConfig({}, {}, false);
  t.equal(c.dataDir, join(process.cwd(), 'var'));
  t.same(c.httpListen, { host: '0.0.0.0', port: 8080 });
  t.match(c.publicUrl, /^http:\/\/[\d.]+:8080$/);
  t.equal(c.publicUrlDerived, true);
  t.equal(c.tftp.enabled, false, 'no TFTP by default when not root');
  t.equal(loadConfig({}, {}, true).tftp.enabled, true, 'TFTP on port 69 by default as root');
  t.equal(loadConfig({}, {}, true).tftp.listen.port, 69);
  t.equal(c.unknownMachines.boot, 'local');
  t.equal(c.sessionTtlSeconds, 3600);
});

t.test('precedence: flags > env > file > defaults', async (t) => {
  const file = join(dir, 'ramboot.yaml');
  writeFileSync(file, 'dataDir: /srv/file\nhttpListen: 10.0.0.1:81\npublicUrl: http://file.example/\nsessionTtlSeconds: 600\nunknownMachines:\n  boot: ramboot\n');
  const fromFile = loadConfig({ config: file }, {}, false);
  t.equal(fromFile.dataDir, '/srv/file');
  t.same(fromFile.httpListen, { host: '10.0.0.1', port: 81 });
  t.equal(fromFile.publicUrl, 'http://file.example', 'trailing slash dropped');
  t.equal(fromFile.unknownMachines.boot, 'ramboot');
  const env = { RAMBOOT_CONFIG: file, RAMBOOT_DATA_DIR: '/srv/env', RAMBOOT_SESSION_TTL: '900' };
  const fromEnv = loadConfig({}, env, false);
  t.equal(fromEnv.dataDir, '/srv/env');
  t.equal(fromEnv.sessionTtlSeconds, 900);
  t.equal(fromEnv.httpListen.port, 81, 'file still applies where env is silent');
  const fromFlags = loadConfig({ dataDir: '/srv/flag', httpListen: '[::1]:9000', tftp: false }, env, true);
  t.equal(fromFlags.dataDir, '/srv/flag');
  t.same(fromFlags.httpListen, { host: '::1', port: 9000 });
  t.equal(fromFlags.tftp.enabled, false, '--no-tftp');
  t.equal(loadConfig({ tftpListen: '127.0.0.1:6969' }, {}, false).tftp.enabled, true, '--tftp-listen enables TFTP');
});

t.test('bad configuration is refused with every reason', async (t) => {
  const bad = (flags: Parameters<typeof loadConfig>[0], re: RegExp, env: NodeJS.ProcessEnv = {}) => {
    t.throws(() => loadConfig(flags, env, false), ConfigError);
    try {
      loadConfig(flags, env, false);
    } catch (e) {
      t.match((e as Error).message, re);
    }
  };
  bad({ httpListen: 'localhost' }, /not ADDR:PORT/);
  bad({ httpListen: '1.2.3.4:99999' }, /not ADDR:PORT/);
  bad({ publicUrl: 'ftp://x' }, /publicUrl/);
  bad({ publicUrl: 'not a url' }, /publicUrl/);
  bad({ unknownBoot: 'always' }, /unknownMachines\.boot/);
  bad({ sessionTtl: 'soon' }, /session TTL/);
  bad({ sessionTtl: '5' }, /sessionTtlSeconds/);
  bad({ config: join(dir, 'missing.yaml') }, /config file .*ENOENT/);
  const typo = join(dir, 'typo.yaml');
  writeFileSync(typo, 'dataDri: /x\n');
  bad({ config: typo }, /unknown field.*dataDri/);
  const broken = join(dir, 'broken.yaml');
  writeFileSync(broken, 'dataDir: [\n');
  bad({ config: broken }, /not valid YAML/);
  const keys = join(dir, 'keys.yaml');
  writeFileSync(keys, 'unknownMachines:\n  sshKeys: ["ssh-ed25519 nope"]\n');
  bad({ config: keys }, /unknownMachines\.sshKeys\.0/);
});

t.test('listen address forms', async (t) => {
  t.same(parseListen(':8080', 'x'), { host: '0.0.0.0', port: 8080 });
  t.same(parseListen('[::]:69', 'x'), { host: '::', port: 69 });
  t.same(parseListen('127.0.0.1:0', 'x'), { host: '127.0.0.1', port: 0 });
});
