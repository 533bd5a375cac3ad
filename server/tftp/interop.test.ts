/**
 * Interop with real TFTP clients (tftp-hpa, atftp, busybox, curl) over loopback: every fetch is checked
 * by sha256 against the served file, including the 100 MiB file (block numbers roll over at 512 bytes)
 * and the iPXE binaries from /usr/lib/ipxe (ipxe.efi there is a symlink into /boot).
 */
import t from 'tap';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger } from '../../common/log.js';
import { needExecutables, requirements } from '../../test/lib/requirements.js';
import { startTftpServer, type TftpTransferEvent } from './server.js';
import {
  CLIENT_TOOLS,
  clientArgv,
  makeRandomFile,
  runClient,
  sha256File,
  type ClientName,
  type Fetch,
  type Fixture,
} from '../../test/tftp/support.js';
import { makeTempDir } from '../../test/lib/temp-dir.js';

const BIG = 100 * 1024 * 1024;
const IPXE_FILES = ['undionly.kpxe', 'snponly.efi', 'ipxe.efi'];

t.test('real clients fetch the right bytes', async (t) => {
  if (!needExecutables(t, Object.values(CLIENT_TOOLS))) return;
  if (!requirements(t, ['ipxe'])) return;
  const tmp = await makeTempDir('tftp-interop');
  t.teardown(tmp.cleanup);
  const served = join(tmp.dir, 'root');
  const out = join(tmp.dir, 'out');
  const { mkdir } = await import('node:fs/promises');
  await mkdir(served);
  await mkdir(out);
  const files: Record<string, Fixture> = {
    'big.bin': await makeRandomFile(served, 'big.bin', BIG),
    'mid.bin': await makeRandomFile(served, 'mid.bin', 3 * 1024 * 1024 + 7),
    'exact.bin': await makeRandomFile(served, 'exact.bin', 8 * 1468 * 512), // multiple of every blksize used
    'empty.bin': await makeRandomFile(served, 'empty.bin', 0),
  };
  const text = 'line one\nline two\r\nbare CR\rend\n'.repeat(300);
  await writeFile(join(served, 'text.txt'), text);

  const events: TftpTransferEvent[] = [];
  const data = await startTftpServer({ host: '127.0.0.1', port: 0, root: served, logger: silentLogger(), onTransfer: (e) => events.push(e) });
  t.teardown(() => data.close());
  const ipxe = await startTftpServer({ host: '127.0.0.1', port: 0, root: '/usr/lib/ipxe', symlinkRoots: ['/boot'], logger: silentLogger() });
  t.teardown(() => ipxe.close());
  const ipxeSums: Record<string, string> = {};
  for (const f of IPXE_FILES) ipxeSums[f] = await sha256File(join('/usr/lib/ipxe', f));

  let n = 0;
  async function check(f: Omit<Fetch, 'host' | 'port' | 'local'>, port: number, want: string, timeoutMs = 120_000): Promise<void> {
    const local = join(out, `${n++}-${f.remote}`);
    const label = `${f.client} ${f.remote}${f.blksize ? ` blksize ${f.blksize}` : ''}${f.windowsize ? ` windowsize ${f.windowsize}` : ''}${f.mode ? ` ${f.mode}` : ''}`;
    const r = await runClient(clientArgv({ ...f, host: '127.0.0.1', port, local }), timeoutMs);
    const got = await sha256File(local).catch((e: Error) => `unreadable: ${e.message}`);
    t.equal(got, want, `${label}: sha256 matches (${r.ms} ms)`, { exit: r.code, stderr: r.stderr });
  }
  const dataPort = data.address().port;
  const ipxePort = ipxe.address().port;

  // The 100 MiB file through every client.
  await check({ client: 'tftp-hpa', remote: 'big.bin' }, dataPort, files['big.bin']!.sha256, 300_000);
  await check({ client: 'busybox', remote: 'big.bin', blksize: 1468 }, dataPort, files['big.bin']!.sha256);
  await check({ client: 'curl', remote: 'big.bin', blksize: 1468 }, dataPort, files['big.bin']!.sha256);
  for (const blksize of [512, 1468, 8192]) {
    for (const windowsize of [1, 4, 16]) {
      // 100 MiB at 512-byte blocks costs ~10 s per cell here: windowsize 16 (and tftp-hpa above) covers
      // the block-number rollover; the slow 512 x 1/4 cells use the 3 MiB file to keep CI time sane.
      if (blksize !== 512 || windowsize === 16) {
        await check({ client: 'atftp', remote: 'big.bin', blksize, windowsize }, dataPort, files['big.bin']!.sha256, 300_000);
      }
      await check({ client: 'atftp', remote: 'mid.bin', blksize, windowsize }, dataPort, files['mid.bin']!.sha256);
      await check({ client: 'atftp', remote: 'exact.bin', blksize, windowsize }, dataPort, files['exact.bin']!.sha256);
      await check({ client: 'atftp', remote: 'empty.bin', blksize, windowsize }, dataPort, files['empty.bin']!.sha256);
    }
  }
  // Every iPXE binary through every client.
  const clients: Array<{ client: ClientName; blksize?: number }> = [
    { client: 'tftp-hpa' }, { client: 'busybox' }, { client: 'busybox', blksize: 1432 }, { client: 'curl' }, { client: 'curl', blksize: 1432 },
  ];
  for (const f of IPXE_FILES) {
    for (const c of clients) await check({ ...c, remote: f }, ipxePort, ipxeSums[f]!);
    for (const blksize of [512, 1468, 8192]) {
      for (const windowsize of [1, 4, 16]) await check({ client: 'atftp', remote: f, blksize, windowsize }, ipxePort, ipxeSums[f]!);
    }
  }
  // Edge sizes and netascii with the plain RFC 1350 client.
  await check({ client: 'tftp-hpa', remote: 'exact.bin' }, dataPort, files['exact.bin']!.sha256);
  await check({ client: 'tftp-hpa', remote: 'empty.bin' }, dataPort, files['empty.bin']!.sha256);
  await check({ client: 'tftp-hpa', remote: 'text.txt', mode: 'netascii' }, dataPort, await sha256File(join(served, 'text.txt')));

  // Every transfer was reported, with its negotiated options.
  const bigAtftp = events.filter((e) => e.file === 'big.bin' && e.outcome === 'ok');
  t.equal(bigAtftp.length, 10, 'one ok event per big.bin transfer');
  t.ok(events.every((e) => e.outcome === 'ok'), 'no failed transfers', { bad: events.filter((e) => e.outcome !== 'ok') });
  const w8 = bigAtftp.filter((e) => e.options['blksize'] === 8192).at(-1); // the windowsize 16 request
  t.equal(w8?.bytes, BIG, 'event carries the byte count');
  t.match(w8?.options, { mode: 'octet', blksize: 8192, windowsize: 8 }, 'windowsize is lowered to keep 8192-byte bursts <= 64 KiB');
});
