import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface KeyPair {
  /** "type base64 comment" */
  pub: string;
  /** Private key file (mode 0600), usable with ssh -i. */
  privateKeyPath: string;
}

let counter = 0;
let dir: string | undefined;

/** A fresh key pair from the real ssh-keygen; files are removed at process exit. */
export function makeKeyPair(type: 'ed25519' | 'ecdsa' | 'rsa' = 'ed25519', bits?: number, comment = 'admin@example'): KeyPair {
  if (!dir) {
    const d = mkdtempSync(join(tmpdir(), 'ramboot-keys-'));
    dir = d;
    process.on('exit', () => rmSync(d, { recursive: true, force: true }));
  }
  const f = join(dir, `key${++counter}`);
  execFileSync('ssh-keygen', ['-q', '-t', type, ...(bits ? ['-b', String(bits)] : []), '-N', '', '-C', comment, '-f', f]);
  return { pub: readFileSync(`${f}.pub`, 'utf8').trim(), privateKeyPath: f };
}
