import type { Command } from 'commander';
import { ConfigError, loadConfig } from '../server/config.js';
import { SETTINGS, settingHelp, type ServeFlags } from '../server/settings.js';
import { createLogger } from '../common/log.js';
import { startRamboot, StartupError } from '../server/serve.js';
import { SecretError } from '../server/secrets.js';

export function registerServeCommand(program: Command): void {
  const cmd = program
    .command('serve')
    .description('run the netboot server (HTTP, TFTP, machine registry)')
    .option('--config <file>', 'YAML config file (env RAMBOOT_CONFIG)');
  for (const s of SETTINGS) cmd.option(s.flag, settingHelp(s));
  cmd
    .action(async (flags: ServeFlags) => {
      let config;
      try {
        config = loadConfig(flags);
      } catch (e) {
        if (e instanceof ConfigError) {
          console.error(`ramboot serve: ${e.message}`);
          process.exitCode = 2;
          return;
        }
        throw e;
      }
      const logger = createLogger({ level: config.logLevel });
      try {
        const rb = await startRamboot(config, logger);
        if (rb.apiTokenGenerated) {
          process.stderr.write(
            `\nramboot: generated the admin API token (shown once; it is stored in ${rb.apiTokenFile}, mode 0600):\n\n    ${rb.apiToken}\n\n` +
              `    curl -H "Authorization: Bearer $(cat ${rb.apiTokenFile})" ${rb.httpUrl.replace('//0.0.0.0:', '//127.0.0.1:').replace('//[::]:', '//[::1]:')}/api/v1/machines\n\n`,
          );
        }
        let stopping = false;
        const stop = (signal: string) => {
          if (stopping) return;
          stopping = true;
          logger.info({ event: 'shutdown', signal }, `stopping on ${signal}`);
          void rb.close().then(() => logger.flush?.(() => process.exit(0)));
          setTimeout(() => process.exit(0), 5000).unref();
        };
        process.on('SIGINT', () => stop('SIGINT'));
        process.on('SIGTERM', () => stop('SIGTERM'));
      } catch (e) {
        if (e instanceof StartupError || e instanceof SecretError) {
          logger.fatal({ event: 'startup.failed', reason: e.message }, e.message);
          logger.flush?.();
          console.error(`ramboot serve: ${e.message}`);
          process.exitCode = 1;
          return;
        }
        throw e;
      }
    });
}
