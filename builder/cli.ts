import type { Command } from 'commander';

// Placeholder until the builder lands (owned by the builder work).
export function registerBuildCommand(program: Command): void {
  program.command('build').description('build a ramboot OS image').action(() => {
    console.error('build: not implemented yet');
    process.exitCode = 2;
  });
}
