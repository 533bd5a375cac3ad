import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireBuildLock } from './build-lock.js';

function dir(): string {
  const d = mkdtempSync(join(tmpdir(), 'ramboot-lock-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

t.test('one build at a time per cache dir; released on finish', async (t) => {
  const d = dir();
  const release = await acquireBuildLock(d);
  t.equal(readFileSync(join(d, '.build.lock'), 'utf8'), `${process.pid}\n`, 'lock names the builder');
  await t.rejects(acquireBuildLock(d), { kind: 'busy', message: new RegExp(`another ramboot build \\(pid ${process.pid}\\) is using ${d}`) });
  t.ok(existsSync(join(d, '.build.lock')), 'a refused build leaves the lock alone');
  await release();
  t.notOk(existsSync(join(d, '.build.lock')), 'released');
  const again = await acquireBuildLock(d);
  await again();
});

t.test('a lock left by a killed build is taken over', async (t) => {
  const d = dir();
  const gone = spawnSync('true').pid; // exited: its pid names no process (pids are not reused this fast)
  writeFileSync(join(d, '.build.lock'), `${gone}\n`);
  const release = await acquireBuildLock(d);
  t.equal(readFileSync(join(d, '.build.lock'), 'utf8'), `${process.pid}\n`);
  await release();
  writeFileSync(join(d, '.build.lock'), 'garbage');
  const r2 = await acquireBuildLock(d);
  t.pass('an unreadable lock counts as stale');
  await r2();
});
