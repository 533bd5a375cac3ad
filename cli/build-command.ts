import type { Command } from 'commander';
import { createLogger } from '../common/log.js';
import { parseBuildOptions, DEFAULT_MIRROR, DEFAULT_SUITE } from '../builder/options.js';
import { build, BuildError } from '../builder/build.js';

interface BuildFlags {
  dataDir?: string;
  name?: string;
  flavour?: string;
  include?: string;
  suite?: string;
  mirror?: string;
}

/** `ramboot build`: see builder/build.ts. Exit codes: 0 ok, 1 build failed, 2 bad input. */
export function registerBuildCommand(program: Command): void {
  program
    .command('build')
    .description('build a ramboot OS image (kernel, initrd with the root, manifest) into DIR/images/NAME')
    .option('--data-dir <dir>', 'data directory (images/, cache/)', './var')
    .option('--name <name>', 'image name', 'default')
    .option('--flavour <flavour>', 'cloud (cloud-init) or lean', 'cloud')
    .option('--include <pkgs>', 'extra Debian packages, comma-separated', '')
    .option('--suite <suite>', 'Debian suite', DEFAULT_SUITE)
    .option('--mirror <url>', 'Debian mirror', DEFAULT_MIRROR)
    .action(async (flags: BuildFlags) => {
      const logger = createLogger();
      let opts;
      try {
        opts = parseBuildOptions({
          dataDir: flags.dataDir, name: flags.name, flavour: flags.flavour as 'cloud' | 'lean',
          include: flags.include, suite: flags.suite, mirror: flags.mirror,
          sourceDateEpoch: process.env['SOURCE_DATE_EPOCH'] || undefined,
        });
      } catch (err) {
        logger.error({ event: 'build.failed', kind: 'bad-input', error: (err as Error).message });
        process.stderr.write(`ramboot build: ${(err as Error).message}\n`);
        logger.flush();
        process.exitCode = 2;
        return;
      }
      try {
        const r = await build(opts, logger);
        process.stderr.write(`ramboot build: image ${opts.name} ready in ${r.imageDir} (${r.seconds} s)\n`);
      } catch (err) {
        const kind = err instanceof BuildError ? err.kind : 'internal';
        logger.error({ event: 'build.failed', kind, error: (err as Error).message });
        process.stderr.write(`ramboot build: ${kind}: ${(err as Error).message}\n`);
        process.exitCode = err instanceof BuildError && (err.kind === 'not-root' || err.kind === 'missing-tool') ? 2 : 1;
      } finally {
        logger.flush();
      }
    });
}
