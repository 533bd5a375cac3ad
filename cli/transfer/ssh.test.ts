import t from 'tap';
import { checkHostKey, HostKeyError, LineSplitter, shJoin, shQuote, spawnLines, sshArgs } from './ssh.js';

t.test('shQuote: every value comes back as one word, unchanged, from a real sh', async (t) => {
  const values = ['plain', '', 'two words', "it's", "'", "''", '$(reboot)', '`id`', '$HOME', 'a\nb', 'tab\there', '*', '~root', '-n', 'a;b|c&d', '"dq"', 'back\\slash', 'é ü', '!', 'x=y'];
  const r = await spawnLines('sh', ['-c', `for a in ${shJoin(values)}; do printf '%s\\0' "$a"; done`]);
  t.equal(r.code, 0);
  t.same(r.stdout.split('\0').slice(0, -1), values);
});

t.test('shQuote leaves safe words bare and quotes the rest', async (t) => {
  t.equal(shQuote('/mnt/ramboot-transfer/home'), '/mnt/ramboot-transfer/home');
  t.equal(shQuote('UUID=abc'), "'UUID=abc'", 'an = is quoted (a first word like A=b would be an assignment)');
  t.equal(shQuote("a'b"), `'a'\\''b'`);
  t.throws(() => shQuote('a\0b'));
  t.throws(() => shJoin([]));
});

t.test('sshArgs: registry-known hosts are checked strictly against the given known_hosts only', async (t) => {
  const a = sshArgs({ label: 'target', host: '10.99.0.5', user: 'root', knownHostsFile: '/tmp/kh', config: '/cfg', identity: '/id' }, 'true');
  t.same(a.slice(0, 4), ['-F', '/cfg', '-i', '/id']);
  for (const o of ['BatchMode=yes', 'StrictHostKeyChecking=yes', 'UserKnownHostsFile=/tmp/kh', 'GlobalKnownHostsFile=/dev/null']) t.ok(a.includes(o), o);
  t.same(a.slice(-4), ['root', '--', '10.99.0.5', 'true']);
  const live = sshArgs({ label: 'source', host: 'src.example', user: 'root' }, 'true');
  t.notOk(live.some((x) => x.startsWith('StrictHostKeyChecking')), 'live mode keeps the admin setting');
  t.ok(live.includes('BatchMode=yes'));
});

t.test('a refused host key is a HostKeyError with the words the issue asks for', async (t) => {
  const stderr = '@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n...\nHost key verification failed.\n';
  t.throws(() => checkHostKey('target', 255, stderr, true), new HostKeyError("the target's SSH host key does not match the one it reported to ramboot: refusing"));
  t.doesNotThrow(() => checkHostKey('target', 1, stderr, true), 'a remote command failing is not ssh refusing');
  t.doesNotThrow(() => checkHostKey('target', 255, 'Connection refused', true));
});

t.test('LineSplitter splits on \\n, and on \\r when asked', async (t) => {
  const got: string[] = [];
  const s = new LineSplitter((l) => got.push(l), true);
  s.push('a\rb');
  s.push('c\r\nd\ne');
  s.end();
  t.same(got, ['a', 'bc', 'd', 'e']);
});

t.test('spawnLines feeds stdin and honours the timeout', async (t) => {
  const r = await spawnLines('sh', ['-s', '--', 'x y'], { stdin: 'printf "%s|" "$1"; cat >/dev/null\n' });
  t.equal(r.stdout, 'x y|');
  const slow = await spawnLines('sleep', ['30'], { timeoutMs: 200 });
  t.not(slow.code, 0);
  t.match(slow.stderr, /killed after/);
});
