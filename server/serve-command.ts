import type { Command } from 'commander';

export function registerServeCommand(program: Command): void {
  program.command('serve').description('run the netboot server').action(() => {
    console.error('serve: not implemented yet');
    process.exitCode = 2;
  });
}
