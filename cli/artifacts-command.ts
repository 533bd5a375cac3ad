import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Transform } from 'node:stream';
import type { Command } from 'commander';
import { IMAGE_NAME_RE } from '../common/manifest.js';
import { addClientOptions, clientFrom, CliError, runCli, type ApiClient, type ApiResponse, type ClientFlags } from './api-client.js';
import { formatBytes, ProgressBar } from './progress.js';

interface ArtifactMeta {
  name: string;
  size: number;
  sha256: string;
  format: string;
  createdAt?: string;
}

/** Stream FILE to PUT /api/v1/artifacts/NAME with a progress bar; the server hashes while it writes. */
async function upload(client: ApiClient, file: string, name: string, opts: { createOnly: boolean; quiet: boolean }): Promise<{ meta: ArtifactMeta; created: boolean }> {
  const st = await stat(file).catch((e: NodeJS.ErrnoException) => {
    throw new CliError(`cannot read ${file}: ${e.code ?? e.message}`, 2);
  });
  if (!st.isFile()) throw new CliError(`${file} is not a regular file`, 2);
  const bar = new ProgressBar();
  const started = Date.now();
  let sent = 0;
  const show = (force = false) => {
    if (opts.quiet) return;
    const secs = (Date.now() - started) / 1000;
    const rate = secs > 0.5 ? sent / secs : undefined;
    bar.update({ label: `upload ${name}`, bytes: sent, total: st.size, ...(rate !== undefined ? { rateBps: rate } : {}) }, force);
  };
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      sent += chunk.length;
      show();
      cb(null, chunk);
    },
  });
  let res: ApiResponse;
  try {
    res = await client.requestStream('PUT', `/api/v1/artifacts/${name}`, createReadStream(file, { highWaterMark: 1 << 20 }), {
      length: st.size,
      through: [counter],
      ...(opts.createOnly ? { headers: { 'if-none-match': '*' } } : {}),
      invalid: [412],
    });
  } catch (e) {
    // the server answered (an error): finish the bar before the message
    if (e instanceof CliError && e.status !== undefined) {
      show(true);
      bar.done();
    }
    throw e;
  }
  show(true);
  bar.done();
  return { meta: res.json as ArtifactMeta, created: res.status === 201 };
}

export function registerArtifactsCommand(program: Command): void {
  const cmd = program.command('artifacts').description('deploy artifacts (disk images) on the server: upload, ls, rm');

  addClientOptions(
    cmd
      .command('upload <file>')
      .description('upload a disk image (raw, zstd, xz, gzip or qcow2; detected by the server) as an artifact')
      .option('--name <name>', 'artifact name (default: the file name)')
      .option('--create-only', 'refuse to replace an existing artifact of that name')
      .option('--json', 'print the stored artifact as JSON'),
  ).action(async (file: string, flags: ClientFlags & { name?: string; createOnly?: boolean; json?: boolean }) => {
    await runCli('artifacts upload', async () => {
      const name = flags.name ?? basename(file);
      if (!IMAGE_NAME_RE.test(name)) throw new CliError(`artifact name "${name}": 1-63 of lower-case letters, digits, ".", "_", "-" (use --name)`, 2);
      const client = await clientFrom(flags);
      const { meta, created } = await upload(client, file, name, { createOnly: !!flags.createOnly, quiet: false });
      if (flags.json) process.stdout.write(`${JSON.stringify(meta)}\n`);
      else process.stdout.write(`${created ? 'created' : 'replaced'} artifact ${meta.name}: ${formatBytes(meta.size)} ${meta.format} sha256 ${meta.sha256}\n`);
    });
  });

  addClientOptions(cmd.command('ls').description('list artifacts').option('--json', 'JSON, one artifact per line')).action(async (flags: ClientFlags & { json?: boolean }) => {
    await runCli('artifacts ls', async () => {
      const client = await clientFrom(flags);
      const list = ((await client.request('GET', '/api/v1/artifacts')).json as { artifacts: ArtifactMeta[] }).artifacts;
      if (flags.json) {
        for (const a of list) process.stdout.write(`${JSON.stringify(a)}\n`);
        return;
      }
      const rows = [['NAME', 'SIZE', 'FORMAT', 'SHA256', 'CREATED'], ...list.map((a) => [a.name, formatBytes(a.size), a.format, a.sha256.slice(0, 16), a.createdAt ?? ''])];
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
      for (const r of rows) process.stdout.write(`${r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()}\n`);
    });
  });

  addClientOptions(cmd.command('rm <name>').description('delete an artifact (refused while a machine\'s deploy names it)')).action(async (name: string, flags: ClientFlags) => {
    await runCli('artifacts rm', async () => {
      if (!IMAGE_NAME_RE.test(name)) throw new CliError(`artifact name "${name}" is not valid`, 2);
      const client = await clientFrom(flags);
      await client.request('DELETE', `/api/v1/artifacts/${name}`);
      process.stdout.write(`removed artifact ${name}\n`);
    });
  });
}
