import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Mac } from '../../common/mac.js';

/**
 * Boot sessions. A session token is minted each time a ramboot/once script is served and rides in
 * the NoCloud seed URL. It is self-verifying, so the server keeps no session table and sessions
 * survive a restart:
 *
 *   <expiry, base36 unix seconds>.<nonce, 128 random bits, base64url>.<HMAC-SHA256(secret, mac|expiry|nonce), 128 bits>
 *
 * The nonce is the session id: a phone-home marks it used on the machine record, so the first
 * phone-home of a session wins.
 */
export interface SessionInfo {
  id: string;
  expiresAt: Date;
}

export type VerifyResult = { ok: true; session: SessionInfo } | { ok: false; reason: 'malformed' | 'bad-signature' | 'expired' };

const TOKEN_RE = /^([0-9a-z]{1,12})\.([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{22})$/;

/** The longest token TOKEN_RE admits: what a seed URL on a kernel command line may need. */
export const MAX_TOKEN_LENGTH = 12 + 1 + 22 + 1 + 22;

export class SessionMinter {
  constructor(
    private readonly secret: Buffer,
    private readonly ttlSeconds: number,
    private readonly now: () => number = Date.now,
  ) {
    if (secret.length < 32) throw new Error('session secret must be at least 32 bytes');
  }

  private sign(mac: Mac, expiry: string, nonce: string): string {
    return createHmac('sha256', this.secret).update(`${mac}|${expiry}|${nonce}`).digest().subarray(0, 16).toString('base64url');
  }

  mint(mac: Mac): { token: string; session: SessionInfo } {
    const expirySec = Math.floor(this.now() / 1000) + this.ttlSeconds;
    const expiry = expirySec.toString(36);
    const nonce = randomBytes(16).toString('base64url');
    const token = `${expiry}.${nonce}.${this.sign(mac, expiry, nonce)}`;
    return { token, session: { id: nonce, expiresAt: new Date(expirySec * 1000) } };
  }

  verify(mac: Mac, token: string): VerifyResult {
    const m = TOKEN_RE.exec(token);
    if (!m) return { ok: false, reason: 'malformed' };
    const [, expiry = '', nonce = '', sig = ''] = m;
    const want = Buffer.from(this.sign(mac, expiry, nonce));
    const got = Buffer.from(sig);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return { ok: false, reason: 'bad-signature' };
    const expirySec = parseInt(expiry, 36);
    if (!Number.isFinite(expirySec) || expirySec * 1000 <= this.now()) return { ok: false, reason: 'expired' };
    return { ok: true, session: { id: nonce, expiresAt: new Date(expirySec * 1000) } };
  }
}
