import { createServer, type Server } from 'node:http';
import type { Teardown } from './teardown.js';

/**
 * A minimal NoCloud seed over HTTP on 127.0.0.1 (the guest reaches it as 10.0.2.2): meta-data,
 * user-data with the key and hostname, empty vendor-data. Used only when the real server cannot
 * give a boot script, so the image itself can still be checked.
 */
export async function startSeedServer(t: Teardown, o: { hostname: string; sshKey: string }): Promise<{ port: number; requests: string[] }> {
  const requests: string[] = [];
  const files: Record<string, string> = {
    'meta-data': `instance-id: ramboot-test-${Date.now()}\nlocal-hostname: ${o.hostname}\n`,
    'user-data': `#cloud-config\nhostname: ${o.hostname}\nssh_authorized_keys:\n  - ${o.sshKey}\n`,
    'vendor-data': '',
  };
  const srv: Server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const name = (req.url ?? '').replace(/^\/seed\//, '').replace(/\?.*$/, '');
    const body = files[name];
    if (body === undefined) {
      res.statusCode = 404;
      res.end();
      return;
    }
    res.setHeader('content-type', 'text/plain');
    res.end(body);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())));
  const addr = srv.address();
  return { port: typeof addr === 'object' && addr ? addr.port : 0, requests };
}

/** The kernel command line that boots `imageCmdline` with the seed above (as 10.0.2.2 from QEMU's user network). */
export function seedCmdline(imageCmdline: string, mac: string, seedPort: number): string {
  return `${imageCmdline} BOOTIF=01-${mac.replaceAll(':', '-')} ds=nocloud-net;s=http://10.0.2.2:${seedPort}/seed/`;
}
