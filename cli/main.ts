import { Command } from 'commander';
import { registerServeCommand } from './serve-command.js';
import { registerBuildCommand } from './build-command.js';
import { registerMachinesCommand } from './machines-command.js';
import { registerArtifactsCommand } from './artifacts-command.js';
import { registerDeployCommand } from './deploy-command.js';
import { registerTransferCommand } from './transfer-command.js';

const program = new Command();
program
  .name('ramboot')
  .description('Netboot machines into a RAM-only Linux whose disks can be rebuilt over SSH')
  .showHelpAfterError();

registerServeCommand(program);
registerBuildCommand(program);
registerMachinesCommand(program);
registerArtifactsCommand(program);
registerDeployCommand(program);
registerTransferCommand(program);

await program.parseAsync(process.argv);
