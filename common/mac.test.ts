import t from 'tap';
import { parseMac, tryParseMac, macToFileStem, MacError } from './mac.js';

t.test('accepts common notations and canonicalises them', async (t) => {
  const want = 'aa:bb:cc:0d:ee:ff';
  for (const input of [
    'aa:bb:cc:0d:ee:ff',
    'AA:BB:CC:0D:EE:FF',
    'aa-bb-cc-0d-ee-ff',
    'AA-BB-CC-0D-EE-FF',
    'aabb.cc0d.eeff',
    'AABB.CC0D.EEFF',
    'aabbcc0deeff',
    ' aabbcc0deeff\n',
  ]) {
    t.equal(parseMac(input), want, input);
  }
});

t.test('rejects anything else with a reason', async (t) => {
  for (const input of [
    '',
    'aa:bb:cc:dd:ee',
    'aa:bb:cc:dd:ee:ff:00',
    'aa:bb-cc:dd:ee:ff',
    'gg:bb:cc:dd:ee:ff',
    'aabbccddeef',
    'aabb.ccdd.eeff.0011',
    '../../etc/passwd',
    'a:b:c:d:e:f',
  ]) {
    t.throws(() => parseMac(input), MacError, JSON.stringify(input));
  }
  t.throws(() => parseMac(42), /must be a string/);
  t.match(String((() => { try { parseMac('nope'); } catch (e) { return e; } })()), /not a MAC address/);
  t.equal(tryParseMac('zz'), undefined);
});

t.test('file stem has no colons', async (t) => {
  t.equal(macToFileStem(parseMac('AABBCCDDEEFF')), 'aa-bb-cc-dd-ee-ff');
});

t.test('hardening (also): addresses that cannot be a network card are refused', async (t) => {
  t.throws(() => parseMac('ff:ff:ff:ff:ff:ff'), /broadcast/);
  t.throws(() => parseMac('01:00:5e:00:00:01'), /multicast/);
  t.throws(() => parseMac('33:33:00:00:00:01'), /multicast/);
  t.throws(() => parseMac('00:00:00:00:00:00'), /all-zero/);
  t.equal(parseMac('02:00:00:00:00:01'), '02:00:00:00:00:01', 'locally administered unicast is fine');
});
