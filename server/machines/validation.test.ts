import t from 'tap';
import { makeKeyPair } from '../../test/lib/ssh-keys.js';
import { hostnameProblem } from './hostname.js';
import { kernelArgsProblem } from './kernel-args.js';
import { describeZodError } from '../../common/zod-error.js';
import { machineSpecSchema } from './model.js';
import { parseSshPublicKey, SshKeyError } from './ssh-key.js';

const keygen = (type: 'ed25519' | 'ecdsa' | 'rsa', bits?: number) => makeKeyPair(type, bits).pub;

t.test('real ssh-keygen keys parse', async (t) => {
  for (const [type, bits] of [['ed25519'], ['ecdsa', 256], ['ecdsa', 384], ['ecdsa', 521], ['rsa', 2048]] as const) {
    const line = keygen(type, bits);
    const k = parseSshPublicKey(line);
    t.equal(k.comment, 'admin@example', `${type} comment`);
    t.ok(line.startsWith(k.type), `${type} type`);
  }
});

t.test('broken keys are refused with a reason', async (t) => {
  const good = keygen('ed25519');
  const [type, b64] = good.split(' ') as [string, string];
  const cases: [string, RegExp][] = [
    ['', /look like/],
    ['ssh-ed25519', /look like/],
    [`ssh-dss ${b64}`, /unsupported/],
    [`ssh-rsa ${b64}`, /says "ssh-ed25519"/],
    [`${type} ${b64.slice(0, -8)}`, /truncated|base64/],
    [`${type} !!!notbase64`, /base64/],
    [`${type} ${b64}\nssh-ed25519 AAAA`, /single line/],
    [`${type} ${Buffer.concat([Buffer.from(b64, 'base64'), Buffer.from([0, 0, 0, 0])]).toString('base64')}`, /trailing/],
  ];
  for (const [line, re] of cases) {
    t.throws(() => parseSshPublicKey(line), SshKeyError, JSON.stringify(line.slice(0, 30)));
    try {
      parseSshPublicKey(line);
    } catch (e) {
      t.match((e as Error).message, re);
    }
  }
  t.throws(() => parseSshPublicKey(keygen('rsa', 1024)), /too short/);
});

t.test('hostnames follow RFC 1123', async (t) => {
  for (const ok of ['web1', 'web-1', 'a', '1host', 'web1.example.com', 'A'.repeat(63)]) t.equal(hostnameProblem(ok), undefined, ok);
  for (const bad of ['', '-web', 'web-', 'we_b', 'web..x', '.web', 'web.', 'a'.repeat(64), `${'a.'.repeat(127)}a`, 'wéb', 'web 1']) {
    t.type(hostnameProblem(bad), 'string', JSON.stringify(bad));
  }
});

t.test('kernelArgs cannot inject iPXE lines or managed args', async (t) => {
  t.equal(kernelArgsProblem('quiet loglevel=3 nomodeset'), undefined);
  t.match(kernelArgsProblem('quiet\nchain http://evil/'), /printable/);
  t.match(kernelArgsProblem('x=${net0/mac}'), /\$\{/);
  t.match(kernelArgsProblem('root=/dev/sda1'), /root=/);
  t.match(kernelArgsProblem('ds=nocloud'), /ramboot sets it/);
  t.match(kernelArgsProblem('a'.repeat(3000)), /longer/);
});

t.test('spec schema: defaults, unknown fields, wrong types, phone_home', async (t) => {
  const key = keygen('ed25519');
  const ok = machineSpecSchema.parse({ sshKeys: [key], hostname: 'Web1' });
  t.same({ boot: ok.boot, image: ok.image, kernelArgs: ok.kernelArgs, userData: ok.userData, hostname: ok.hostname }, { boot: 'ramboot', image: 'default', kernelArgs: '', userData: {}, hostname: 'web1' });
  const bad = (body: unknown, re: RegExp) => {
    const r = machineSpecSchema.safeParse(body);
    t.notOk(r.success, JSON.stringify(body).slice(0, 60));
    if (!r.success) t.match(describeZodError(r.error), re);
  };
  bad({}, /sshKeys/);
  bad({ sshKeys: [key], colour: 'red' }, /unknown field.*colour/);
  bad({ sshKeys: 'ssh-ed25519 AAAA' }, /sshKeys/);
  bad({ sshKeys: [key], boot: 'forever' }, /boot/);
  bad({ sshKeys: [key], image: '../etc' }, /image/);
  bad({ sshKeys: [key], hostname: 'bad_name' }, /hostname/);
  bad({ sshKeys: [key], userData: { phone_home: {} } }, /phone_home is managed/);
  bad({ sshKeys: [key], userData: [] }, /userData/);
  bad({ sshKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA'] }, /sshKeys\.0/);
});
