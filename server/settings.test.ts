import t from 'tap';
import { readFileSync } from 'node:fs';
import { ConfigError, loadConfig } from './config.js';
import { SETTINGS, settingHelp } from './settings.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

t.test('README\'s configuration table names every setting\'s flag and environment variable', async (t) => {
  for (const s of SETTINGS) {
    t.ok(readme.includes(`\`${s.flag.split(' ')[0]}\``), `${s.flag} in README`);
    t.ok(readme.includes(`\`${s.env}`), `${s.env} in README`);
  }
});

t.test('each setting is read from its flag and from its environment variable, flag first', async (t) => {
  const samples: Record<string, [string, unknown]> = {
    dataDir: ['/srv/x', '/srv/x'], httpListen: ['127.0.0.1:81', { host: '127.0.0.1', port: 81 }], publicUrl: ['http://h:1', 'http://h:1'],
    apiTokenFile: ['/srv/tok', '/srv/tok'], tftpListen: ['127.0.0.1:69', { host: '127.0.0.1', port: 69 }], ipxeDir: ['/srv/ipxe', '/srv/ipxe'],
    unknownBoot: ['ramboot', 'ramboot'], sessionTtl: ['600', 600], logLevel: ['debug', 'debug'],
    httpMaxConnections: ['100', 100], httpHeadersTimeout: ['5000', 5000], httpRequestTimeout: ['9000', 9000],
    metricsListen: ['127.0.0.1:9100', { host: '127.0.0.1', port: 9100 }], dhcpInterface: ['eth1', 'eth1'],
  };
  const get = (c: object, path: readonly string[]) => path.reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], c);
  for (const s of SETTINGS) {
    if (s.kind === 'off-switch' || s.kind === 'on-switch') {
      const on = s.kind === 'on-switch';
      t.equal(get(loadConfig({ [s.option]: on }, {}, true), s.path), on, `${s.flag}`);
      t.equal(get(loadConfig({}, { [s.env]: '1' }, true), s.path), on, `${s.env}=1`);
      continue;
    }
    const sample = samples[s.option];
    if (!sample) {
      t.fail(`no sample value for ${s.option}: add one`);
      continue;
    }
    const [text, want] = sample;
    t.same(get(loadConfig({ [s.option]: text }, {}, false), s.path), want, `${s.flag}`);
    t.same(get(loadConfig({}, { [s.env]: text }, false), s.path), want, `${s.env}`);
    t.match(settingHelp(s), s.env, 'help names the environment variable');
  }
  t.throws(() => loadConfig({ sessionTtl: 'soon' }, {}, false), ConfigError);
});
