import t from 'tap';
import { optionsFromFlags, parseSource } from './transfer-command.js';

t.test('--from: a MAC is cold, [user@]host is live (root by default)', async (t) => {
  t.same(parseSource('52:54:00:7a:11:01'), { mode: 'cold', mac: '52:54:00:7a:11:01' });
  t.same(parseSource('5254.007a.1101'), { mode: 'cold', mac: '52:54:00:7a:11:01' });
  t.same(parseSource('root@10.99.0.10'), { mode: 'live', user: 'root', host: '10.99.0.10' });
  t.same(parseSource('db1.example.org'), { mode: 'live', user: 'root', host: 'db1.example.org' });
  t.same(parseSource('root@[fd00::10]'), { mode: 'live', user: 'root', host: 'fd00::10' });
  t.same(parseSource('525400aabbcc'), { mode: 'cold', mac: '52:54:00:aa:bb:cc' });
  for (const bad of ['root@', '-oProxyCommand=x', 'root@host;reboot', 'ro ot@host', 'root@-host', '$(id)@host']) {
    t.throws(() => parseSource(bad), { exitCode: 2 } as unknown as Error, bad);
  }
});

t.test('flags: usage errors exit 2 before anything is asked of anyone', async (t) => {
  const base = { from: 'root@10.99.0.10', to: '52:54:00:7a:11:02' };
  t.match(await optionsFromFlags(base), { targetMac: '52:54:00:7a:11:02', disk: 'auto', after: 'reboot', planOnly: false, json: false, source: { mode: 'live' } });
  t.match(await optionsFromFlags({ ...base, disk: '/dev/disk/by-id/virtio-RBTARGET', after: 'stay', plan: true, json: true }), { disk: '/dev/disk/by-id/virtio-RBTARGET', after: 'stay', planOnly: true, json: true });
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ ...base, to: 'nope' }, /--to/],
    [{ ...base, from: undefined }, /--from/],
    [{ ...base, from: '52:54:00:7a:11:02' }, /same machine/],
    [{ ...base, disk: '/dev/vda;reboot' }, /--disk/],
    [{ ...base, disk: '/dev/../etc/passwd' }, /--disk/],
    [{ ...base, disk: 'sda' }, /--disk/],
    [{ ...base, after: 'halt' }, /--after/],
    [{ ...base, sshConfig: '/nonexistent/ssh_config' }, /--ssh-config: cannot read/],
    [{ ...base, identity: '/nonexistent/id' }, /--identity: cannot read/],
  ];
  for (const [flags, re] of bad) await t.rejects(optionsFromFlags(flags), { exitCode: 2, message: re } as unknown as Error, JSON.stringify(flags));
});
