import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../common/log.js';
import { run } from '../common/run.js';

export const HOOK_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'mmdebstrap-hook.sh');
/** Bump when the mmdebstrap arguments below change (part of the root cache key). */
export const MMDEBSTRAP_ARGS_VERSION = 1;
const MERGED_USR_HOOKS = '/usr/share/mmdebstrap/hooks/merged-usr';

export interface DebootstrapInputs {
  suite: string;
  mirror: string;
  packages: string[];
  rootDir: string;
  /** <data-dir>/cache/apt */
  cacheDir: string;
  /** Receives kernel.deb, busybox.deb, kernel.txt, packages.tsv. */
  outDir: string;
  sourceDateEpoch: number;
  logger: Logger;
}

/** A build failure with a cause a user can act on. */
export class BuildError extends Error {
  constructor(readonly kind: string, message: string) {
    super(message);
  }
}

/** Maps mmdebstrap/apt output to a clear cause. */
export function classifyFailure(stderr: string, inp: { suite: string; mirror: string }): BuildError {
  const lines = stderr.split('\n');
  const missing = [...stderr.matchAll(/Unable to locate package ([^\s]+)/g)].map((m) => m[1]);
  const noCandidate = [...stderr.matchAll(/Package '?([^\s']+)'? has no installation candidate/g)].map((m) => m[1]);
  if (missing.length || noCandidate.length) {
    const names = [...new Set([...missing, ...noCandidate])].join(', ');
    return new BuildError('unknown-package', `unknown package in suite ${inp.suite}: ${names}`);
  }
  if (/No space left on device/i.test(stderr)) {
    return new BuildError('no-space', 'no space left on device while building (need about 3 GiB free in the data dir)');
  }
  if (/does not have a Release file|no Release file|Release' is not signed|404\s+Not Found \[IP[^\]]*\].*Release|InRelease.*404/i.test(stderr)) {
    return new BuildError('unknown-suite', `unknown suite "${inp.suite}" on mirror ${inp.mirror} (no Release file)`);
  }
  if (/Temporary failure resolving|Could not resolve|Could not connect|Connection refused|Connection timed out|Failed to fetch|Unable to connect|No route to host|Network is unreachable/i.test(stderr)) {
    return new BuildError('mirror-unreachable', `mirror unreachable: ${inp.mirror} (${lines.find((l) => /resolv|connect|refused|timed out|unreachable|Failed to fetch/i.test(l))?.trim() ?? 'network error'})`);
  }
  const tail = lines.filter((l) => l.trim() !== '').slice(-6).join(' | ');
  return new BuildError('mmdebstrap', `mmdebstrap failed: ${tail}`);
}

/**
 * Builds the root tree with mmdebstrap (root mode, minbase variant, merged /usr without the
 * usrmerge package). Downloads go through <cache>/archives and lists are kept in <cache>/lists.
 */
export async function debootstrap(inp: DebootstrapInputs): Promise<void> {
  const args = [
    '--mode=root', '--variant=minbase', '--format=directory',
    `--hook-dir=${MERGED_USR_HOOKS}`,
    '--aptopt=APT::Install-Recommends "false"',
    '--aptopt=Acquire::Retries "3"',
    '--dpkgopt=force-unsafe-io',
    '--dpkgopt=path-exclude=/usr/share/doc/*',
    '--dpkgopt=path-include=/usr/share/doc/*/copyright',
    '--dpkgopt=path-exclude=/usr/share/man/*',
    '--dpkgopt=path-exclude=/usr/share/info/*',
    '--dpkgopt=path-exclude=/usr/share/locale/*',
    '--dpkgopt=path-include=/usr/share/locale/locale.alias',
    `--include=${inp.packages.join(',')}`,
    // Fixed strings: every path reaches the hook through the environment, not a shell command.
    '--setup-hook="$RAMBOOT_HOOK" setup "$1"',
    '--customize-hook="$RAMBOOT_HOOK" customize "$1"',
    inp.suite, inp.rootDir, inp.mirror,
  ];
  const log = inp.logger;
  log.info({ event: 'build.mmdebstrap.start', suite: inp.suite, mirror: inp.mirror, packages: inp.packages.length });
  const started = Date.now();
  const r = await run('mmdebstrap', args, {
    env: {
      RAMBOOT_HOOK: HOOK_SCRIPT,
      RAMBOOT_CACHE: inp.cacheDir,
      RAMBOOT_OUT: inp.outDir,
      SOURCE_DATE_EPOCH: String(inp.sourceDateEpoch),
      LC_ALL: 'C.UTF-8',
    },
    onStderrLine: (line) => {
      const m = /^I: (.*)$/.exec(line);
      if (m) log.info({ event: 'build.mmdebstrap.step', step: m[1] });
      else if (/^E: /.test(line)) log.warn({ event: 'build.mmdebstrap.error', line });
    },
  });
  if (r.code !== 0) throw classifyFailure(r.stderr, inp);
  log.info({ event: 'build.mmdebstrap.done', seconds: Math.round((Date.now() - started) / 100) / 10 });
}
