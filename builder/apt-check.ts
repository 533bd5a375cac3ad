import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../common/run.js';
import { BuildError, classifyFailure } from './mmdebstrap.js';

/**
 * Checks that every package in `names` exists in `suite` on `mirror` before the long mmdebstrap run
 * (which would only notice after installing the essential set). Uses the host's apt with a private
 * configuration and the build's lists cache (<cacheDir>/lists), so it also warms that cache.
 */
export async function checkPackagesExist(o: { mirror: string; suite: string; names: string[]; cacheDir: string }): Promise<void> {
  if (o.names.length === 0) return;
  const tmp = await mkdtemp(join(o.cacheDir, '.apt-check-'));
  try {
    const lists = join(o.cacheDir, 'lists');
    await mkdir(join(lists, 'partial'), { recursive: true });
    await mkdir(join(tmp, 'archives', 'partial'), { recursive: true });
    await writeFile(join(tmp, 'sources.list'), `deb ${o.mirror} ${o.suite} main\n`);
    await writeFile(join(tmp, 'status'), '');
    const opts = [
      '-o', `Dir::Etc::SourceList=${join(tmp, 'sources.list')}`, '-o', 'Dir::Etc::SourceParts=/dev/null',
      '-o', `Dir::State::Lists=${lists}`, '-o', `Dir::Cache=${tmp}`, '-o', `Dir::State::status=${join(tmp, 'status')}`,
      '-o', 'APT::Architecture=amd64', '-o', 'APT::Architectures::=amd64', '-o', 'Acquire::Languages=none',
      '-o', 'Debug::NoLocking=1', '-o', 'APT::Sandbox::User=root',
    ];
    const up = await run('apt-get', ['-q', ...opts, 'update'], { env: { LC_ALL: 'C.UTF-8' } });
    if (up.code !== 0 || /^(E|W): /m.test(up.stderr)) {
      const f = classifyFailure(`${up.stdout}\n${up.stderr}`, o);
      if (up.code !== 0 || f.kind !== 'mmdebstrap') throw f;
    }
    const missing: string[] = [];
    for (const spec of o.names) {
      const name = spec.replace(/[=/].*$/, '');
      const r = await run('apt-cache', [...opts, 'show', '--no-all-versions', name], { env: { LC_ALL: 'C.UTF-8' } });
      if (r.code !== 0 || !/^Package: /m.test(r.stdout)) {
        // A virtual package some real package provides is fine too.
        const p = await run('apt-cache', [...opts, 'showpkg', name], { env: { LC_ALL: 'C.UTF-8' } });
        if (!/Reverse Provides: *\n\S/.test(p.stdout)) missing.push(name);
      }
    }
    if (missing.length) {
      throw new BuildError('unknown-package', `unknown package in suite ${o.suite}: ${missing.join(', ')}`);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
