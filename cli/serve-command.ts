import type { Command } from 'commander';
import { ConfigError, loadConfig, type ServeFlags } from '../server/config.js';
import { createLogger } from '../common/log.js';
import { startRamboot, StartupError } from '../server/serve.js';
import { SecretError } from '../server/secrets.js';

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('run the netboot server (HTTP, TFTP, machine registry)')
    .option('--config <file>', 'YAML config file (env RAMBOOT_CONFIG)')
    .option('--data-dir <dir>', 'data directory (env RAMBOOT_DATA_DIR; default ./var)')
    .option('--http-listen <addr:port>', 'HTTP listen address (env RAMBOOT_HTTP_LISTEN; default 0.0.0.0:8080)')
    .option('--public-url <url>', 'URL booting machines use to reach this server (env RAMBOOT_PUBLIC_URL; default derived from the listen address)')
    .option('--api-token-file <file>', 'admin API token file (env RAMBOOT_API_TOKEN_FILE; default <data-dir>/api-token, generated)')
    .option('--tftp-listen <addr:port>', 'TFTP listen address (env RAMBOOT_TFTP_LISTEN; default port 69 when root)')
    .option('--no-tftp', 'do not run the TFTP server (env RAMBOOT_NO_TFTP=1)')
    .option('--ipxe-dir <dir>', 'directory of iPXE binaries served over TFTP (env RAMBOOT_IPXE_DIR; default /usr/lib/ipxe)')
    .option('--unknown-boot <mode>', 'what unregistered machines boot: local | ramboot (env RAMBOOT_UNKNOWN_BOOT; default local)')
    .option('--session-ttl <seconds>', 'lifetime of a boot session token (env RAMBOOT_SESSION_TTL; default 3600)')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace (env RAMBOOT_LOG_LEVEL; default info)')
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
