/**
 * `tsx bench/tftp-npm-compare.ts`: the decision record for server/tftp/README.md. Runs the loss cells of
 * server/tftp/loss.test.ts (through the same seeded impairing relay) and a clean 100 MiB atftp transfer
 * at blksize 8192 x windowsize 16 against npm `tftp` 0.1.2's server (denyPUT, error listener attached,
 * i.e. configured as safely as it allows) and against ramboot's server, and prints both.
 */
import { makeTempDir } from '../test/lib/temp-dir.js';
import { createRequire } from 'node:module';
import { silentLogger } from '../common/log.js';
import { startTftpServer } from '../server/tftp/server.js';
import { ImpairRelay } from '../test/tftp/impair-relay.js';
import { LOSS_CELLS, makeLossFiles, makeRandomFile, runCells } from '../test/tftp/support.js';

interface NpmTftpServer {
  on(ev: 'error' | 'listening', fn: (e?: Error) => void): NpmTftpServer;
  listen(): void;
  close(): void;
}
const require = createRequire(import.meta.url);
const tftp = require('tftp') as { createServer(o: { host: string; port: number; root: string; denyPUT: boolean }): NpmTftpServer };

async function npmServer(root: string, port: number): Promise<{ close(): void; errors: string[] }> {
  const errors: string[] = [];
  const s = tftp.createServer({ host: '127.0.0.1', port, root, denyPUT: true });
  s.on('error', (e) => errors.push(String(e)));
  await new Promise<void>((resolve) => {
    s.on('listening', () => resolve());
    s.listen();
  });
  return { close: () => s.close(), errors };
}

const tmp = await makeTempDir('tftp-npm');
const { root, out, want } = await makeLossFiles(tmp.dir);
want['big.bin'] = (await makeRandomFile(root, 'big.bin', 100 * 1024 * 1024)).sha256;
const uncaught: string[] = [];
process.on('uncaughtException', (e) => uncaught.push(String(e)));

for (const which of ['npm tftp 0.1.2', 'ramboot'] as const) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const srv = which === 'ramboot'
    ? await startTftpServer({ host: '127.0.0.1', port, root, logger: silentLogger() }).then((s) => ({ close: () => void s.close(), errors: [] as string[] }))
    : await npmServer(root, port);
  const relay = await ImpairRelay.start('127.0.0.1', port, { loss: 0.05, duplicate: 0.05, reorder: 0.1, reorderDelayMs: 3, seed: 2026 });
  const lossy = await runCells('127.0.0.1', relay.port, LOSS_CELLS, want, out, 120_000, true);
  await relay.close();
  const clean = await runCells('127.0.0.1', port, [{ client: 'atftp', remote: 'big.bin', blksize: 8192, windowsize: 16 }], want, out, 120_000);
  srv.close();
  console.log(`\n## ${which}`);
  for (const r of [...lossy.map((x) => ({ ...x, label: `5% loss/dup, 10% reorder: ${x.label}` })), ...clean.map((x) => ({ ...x, label: `clean: ${x.label}` }))]) {
    console.log(`${r.ok ? 'ok     ' : 'FAILED '} ${r.label} (${r.ms} ms)${r.ok ? '' : ` exit ${r.exit}: ${r.stderr.split('\n').filter(Boolean).slice(-2).join(' / ')}`}`);
  }
  if (srv.errors.length) console.log(`server 'error' events: ${srv.errors.slice(0, 3).join(' | ')}`);
  if (uncaught.length) console.log(`uncaught exceptions in the server process: ${uncaught.splice(0).slice(0, 3).join(' | ')}`);
}
await tmp.cleanup();
process.exit(0);
