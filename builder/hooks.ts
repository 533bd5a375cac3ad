import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, readdir, realpath, stat } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { assetPath } from '../common/assets.js';
import type { Logger } from '../common/log.js';

/** boot-assets/hooks: build-time scripts run against the root tree, in lexical order. */
export function hooksDir(): string {
  return assetPath('hooks');
}

/** boot-assets/fixes: shipped inside the OS (`ramboot-fix /target`); installed by a hook. */
export function fixesDir(): string {
  return assetPath('fixes');
}

/** A hook is an executable file named `NN-name`; anything else in the directory is not a hook. */
const HOOK_NAME = /^[0-9]{2}-[a-z0-9][a-z0-9._-]*$/;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const KEEP_BYTES = 16 * 1024;
const DEFAULT_TIMEOUT_MS = 5 * 60_000;

export interface RunHooksOptions {
  /** Defaults to boot-assets/hooks. */
  hooksDir?: string;
  /** Extra environment for every hook (on top of PATH, LC_ALL, SOURCE_DATE_EPOCH, RAMBOOT_FIXES_DIR). */
  env?: Record<string, string>;
  logger: Logger;
  onProgress?: (hook: string, index: number, total: number) => void;
  /** Per hook; default 5 minutes. */
  timeoutMs?: number;
}

/** A hook failed: names the hook and carries the tail of its stderr. */
export class HookError extends Error {
  constructor(
    readonly hook: string,
    readonly exitCode: number | null,
    readonly stderr: string,
    message: string,
  ) {
    super(message);
    this.name = 'HookError';
  }
}

/** The hooks in `dir`, in the order they run. Throws when a hook-named file is not executable. */
export async function listHooks(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  const names = entries
    .filter((e) => HOOK_NAME.test(e.name))
    .map((e) => e.name)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) {
    const path = join(dir, name);
    const st = await stat(path);
    if (!st.isFile()) throw new Error(`hook ${name} in ${dir} is not a regular file`);
    try {
      await access(path, constants.X_OK);
    } catch {
      throw new Error(`hook ${name} in ${dir} is not executable (chmod +x it)`);
    }
  }
  return names;
}

async function checkRoot(root: string): Promise<string> {
  if (typeof root !== 'string' || root === '' || !isAbsolute(root)) {
    throw new Error(`runHooks: root must be an absolute path, got ${JSON.stringify(root)}`);
  }
  let real: string;
  try {
    real = await realpath(root);
  } catch {
    throw new Error(`runHooks: root does not exist: ${root}`);
  }
  if (!(await stat(real)).isDirectory()) throw new Error(`runHooks: root is not a directory: ${root}`);
  if (real === '/') throw new Error('runHooks: refusing to run hooks against the host root /');
  return real;
}

function hookEnv(extra: Record<string, string> | undefined): Record<string, string> {
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    LC_ALL: 'C',
    RAMBOOT_FIXES_DIR: fixesDir(),
  };
  const sde = process.env['SOURCE_DATE_EPOCH'];
  if (sde !== undefined) env['SOURCE_DATE_EPOCH'] = sde;
  for (const [k, v] of Object.entries(extra ?? {})) {
    if (!ENV_NAME.test(k)) throw new Error(`runHooks: invalid environment variable name ${JSON.stringify(k)}`);
    if (typeof v !== 'string' || v.includes('\0')) throw new Error(`runHooks: invalid value for ${k}`);
    env[k] = v;
  }
  return env;
}

function tail(s: string): string {
  return s.length > KEEP_BYTES ? s.slice(-KEEP_BYTES) : s;
}

function runOne(
  path: string,
  name: string,
  root: string,
  env: Record<string, string>,
  timeoutMs: number,
  logger: Logger,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(path, [root], { env, cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout = tail(stdout + d);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = tail(stderr + d);
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new HookError(name, null, stderr, `hook ${name} could not start: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const ms = Date.now() - started;
      for (const line of stdout.split('\n').filter((l) => l.trim() !== '')) {
        logger.debug({ event: 'build.hook.output', hook: name, line });
      }
      const warnings = stderr.split('\n').filter((l) => l.trim() !== '');
      if (code === 0) {
        for (const line of warnings) logger.warn({ event: 'build.hook.stderr', hook: name, line });
        logger.info({ event: 'build.hook.done', hook: name, ms });
        resolve();
        return;
      }
      const why = timedOut ? `timed out after ${timeoutMs} ms` : code !== null ? `exit ${code}` : `signal ${signal}`;
      const detail = warnings.slice(-20).join('\n');
      logger.error({ event: 'build.hook.failed', hook: name, ms, code, signal, stderr: detail });
      reject(new HookError(name, code, detail, `hook ${name} failed (${why})${detail ? `: ${detail}` : ''}`));
    });
  });
}

/**
 * Runs every hook of boot-assets/hooks (or opts.hooksDir) against `root`, in lexical order, each
 * spawned with argv [root] (never through a shell). The first failing hook fails the build.
 */
export async function runHooks(root: string, opts: RunHooksOptions): Promise<void> {
  const realRoot = await checkRoot(root);
  const dir = opts.hooksDir ?? hooksDir();
  const env = hookEnv(opts.env);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new Error(`runHooks: invalid timeoutMs ${timeoutMs}`);
  const names = await listHooks(dir);
  opts.logger.info({ event: 'build.hooks.start', dir, root: realRoot, hooks: names });
  for (const [i, name] of names.entries()) {
    opts.onProgress?.(name, i, names.length);
    opts.logger.info({ event: 'build.hook.start', hook: name, index: i, total: names.length });
    await runOne(join(dir, name), name, realRoot, env, timeoutMs, opts.logger);
  }
  opts.logger.info({ event: 'build.hooks.done', count: names.length });
}
