import t from 'tap';
import { randomBytes } from 'node:crypto';
import type { Mac } from '../../common/mac.js';
import { SessionMinter } from './sessions.js';

const mac = 'aa:bb:cc:dd:ee:ff' as Mac;
const other = 'aa:bb:cc:dd:ee:00' as Mac;

t.test('minted tokens verify for their MAC only, until they expire', async (t) => {
  let now = 1_800_000_000_000;
  const m = new SessionMinter(randomBytes(32), 3600, () => now);
  const { token, session } = m.mint(mac);
  t.match(token, /^[0-9a-z]+\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{22}$/);
  t.equal(Buffer.from(session.id, 'base64url').length, 16, '128-bit nonce');
  const ok = m.verify(mac, token);
  t.ok(ok.ok);
  if (ok.ok) t.equal(ok.session.id, session.id);
  t.same(m.verify(other, token), { ok: false, reason: 'bad-signature' });
  now += 3600 * 1000;
  t.same(m.verify(mac, token), { ok: false, reason: 'expired' });
});

t.test('tampering and other secrets are refused', async (t) => {
  const m = new SessionMinter(randomBytes(32), 60);
  const { token } = m.mint(mac);
  const [exp, nonce, sig] = token.split('.') as [string, string, string];
  const later = (parseInt(exp, 36) + 99999).toString(36);
  t.same(m.verify(mac, `${later}.${nonce}.${sig}`), { ok: false, reason: 'bad-signature' }, 'extended expiry');
  t.same(m.verify(mac, `${exp}.${'A'.repeat(22)}.${sig}`), { ok: false, reason: 'bad-signature' }, 'other nonce');
  t.same(m.verify(mac, 'garbage'), { ok: false, reason: 'malformed' });
  t.same(m.verify(mac, `${token}x`), { ok: false, reason: 'malformed' });
  t.same(new SessionMinter(randomBytes(32), 60).verify(mac, token), { ok: false, reason: 'bad-signature' }, 'other server secret');
  t.not(m.mint(mac).token, m.mint(mac).token, 'every mint is new');
  t.throws(() => new SessionMinter(randomBytes(8), 60), /32 bytes/);
});
