import { spawn, spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { run } from '../../common/run.js';
import { findExecutable, needExecutables } from '../../test/lib/requirements.js';
import { LocalRemote } from '../../test/lib/transfer/local-remote.js';
import { gptPlan } from '../../test/lib/transfer/plan-fixture.js';
import { runSteps } from './steps.js';
import { applySteps, formatSteps, layoutMismatch, mkfsArgv, mountSteps, parseBlkidSections, partitionSteps, PlanError, PROBE, validatePlan } from './target.js';
import type { Inventory, Plan } from './types.js';

t.test('GPT: one sgdisk with every partition, types, names, attributes, kept PARTUUIDs', async (t) => {
  const plan = gptPlan();
  plan.partitions[0]!.attrs = ['LegacyBIOSBootable', 'GUID:63'];
  const source = { disks: [{ partitions: [{ path: '/dev/vda2', partuuid: '4B1A2C3D-0000-4000-8000-00000000AA02' }] }] } as unknown as Inventory;
  const steps = partitionSteps(plan, source);
  t.same(steps.map((s) => s.argv), [
    ['sgdisk', '-o', '/dev/vda'],
    ['sgdisk',
      '-n', '1:2048:4095', '-t', '1:21686148-6449-6E6F-744E-656564454649', '-c', '1:bios', '-A', '1:set:2', '-A', '1:set:63',
      '-n', '2:4096:4919295', '-t', '2:0FC63DAF-8483-4772-8E79-3D69D8477DE4', '-c', "2:root 'fs'", '-u', '2:4B1A2C3D-0000-4000-8000-00000000AA02',
      '-n', '3:4919296:7376895', '-t', '3:0FC63DAF-8483-4772-8E79-3D69D8477DE4',
      '-n', '4:7376896:7901183', '-t', '4:0657FD6D-A4AB-43C4-84E5-0933C84B4F4F',
      '/dev/vda'],
  ]);
});

t.test('MBR: an sfdisk script on stdin', async (t) => {
  const plan = gptPlan();
  plan.table = 'dos';
  plan.partitions = plan.partitions.slice(1).map((p, i) => ({ ...p, number: i + 1, device: `/dev/vda${i + 1}`, type: i === 2 ? '82' : '83', bootable: i === 0 }));
  const [s] = partitionSteps(plan);
  t.same(s!.argv, ['sfdisk', '--no-reread', '--no-tell-kernel', '-q', '-w', 'always', '-W', 'always', '/dev/vda']);
  t.equal(s!.input, 'label: dos\nunit: sectors\n\n/dev/vda1 : start=4096, size=4915200, type=83, bootable\n/dev/vda2 : start=4919296, size=2457600, type=83\n/dev/vda3 : start=7376896, size=524288, type=82\n');
});

t.test('mkfs keeps UUIDs and labels', async (t) => {
  const f = gptPlan().filesystems;
  t.same(formatSteps(gptPlan()).map((s) => s.argv), [
    ['mkfs.ext4', '-F', '-q', '-U', '11111111-2222-3333-4444-555555555555', '-L', 'root', '/dev/vda2'],
    ['mkfs.ext4', '-F', '-q', '-U', '66666666-7777-8888-9999-000000000000', '/dev/vda3'],
    ['mkswap', '-f', '-U', 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', '/dev/vda4'],
  ]);
  t.same(mkfsArgv({ ...f[0]!, type: 'xfs' }), ['mkfs.xfs', '-f', '-q', '-m', 'uuid=11111111-2222-3333-4444-555555555555', '-L', 'root', '/dev/vda2']);
  t.same(mkfsArgv({ ...f[0]!, type: 'btrfs', label: null }), ['mkfs.btrfs', '-f', '-q', '-U', '11111111-2222-3333-4444-555555555555', '/dev/vda2']);
  t.same(mkfsArgv({ ...f[0]!, type: 'vfat', uuid: 'ABCD-12EF', label: 'EFI', version: 'FAT32', device: '/dev/vda1' }), ['mkfs.vfat', '-F', '32', '-i', 'ABCD12EF', '-n', 'EFI', '/dev/vda1']);
});

t.test('mounts in plan order under /mnt/ramboot-transfer, then the marker', async (t) => {
  t.same(mountSteps(gptPlan()).map((s) => s.argv), [
    ['mkdir', '-p', '/mnt/ramboot-transfer'], ['mount', '-t', 'ext4', '/dev/vda2', '/mnt/ramboot-transfer'],
    ['mkdir', '-p', '/mnt/ramboot-transfer/home'], ['mount', '-t', 'ext4', '/dev/vda3', '/mnt/ramboot-transfer/home'],
  ]);
  const stages = applySteps(gptPlan());
  t.same(stages.map((s) => s.stage), ['partition', 'format', 'mount']);
  t.match(stages[2]!.steps.at(-1)!.argv, ['sh', '-c', /printf/, 'sh', 'ab'.repeat(32), '/mnt/ramboot-transfer/.ramboot-transfer']);
});

t.test('a plan with values that could break a command line is refused before anything runs', async (t) => {
  const bad: [string, (p: Plan) => void][] = [
    ['device', (p) => { p.partitions[1]!.device = '/dev/vda2; reboot'; }],
    ['dotdot', (p) => { p.mounts[1]!.mountpoint = '/home/../etc'; }],
    ['space', (p) => { p.mounts[1]!.mountpoint = '/my home'; }],
    ['uuid', (p) => { p.filesystems[0]!.uuid = "x' -O ^has_journal"; }],
    ['type', (p) => { p.partitions[0]!.type = 'EF02;'; }],
    ['hash', (p) => { p.hash = 'zz'; }],
    ['root first', (p) => { p.mounts.reverse(); }],
    ['attr', (p) => { p.partitions[0]!.attrs = ['Bogus']; }],
  ];
  for (const [name, mutate] of bad) {
    const p = gptPlan();
    mutate(p);
    t.throws(() => validatePlan(p), PlanError, name);
  }
  t.doesNotThrow(() => validatePlan(gptPlan()));
});

t.test('batches: the failing step is named, mayFail steps are not fatal, quoting holds', async (t) => {
  const local = new LocalRemote('test machine');
  const seen: string[] = [];
  await runSteps(local, [
    { what: 'may fail', argv: ['false'], mayFail: true },
    { what: 'quoted', argv: ['test', "a'b $(x)", '=', "a'b $(x)"] },
    { what: 'input', argv: ['grep', '-qx', 'two words'], input: 'one\ntwo words\n' },
  ], (s) => seen.push(s.what));
  t.same(seen, ['may fail', 'quoted', 'input']);
  await t.rejects(runSteps(local, [{ what: 'first', argv: ['true'] }, { what: 'making the thing', argv: ['sh', '-c', 'echo broken disk >&2; exit 3'] }, { what: 'never', argv: ['touch', '/nonexistent/x'] }]),
    { name: 'RemoteError', message: 'making the thing failed on the test machine (exit 3): broken disk', code: 3 });
});

t.test('real sgdisk and mkfs on an image file: the layout probe then says it is the planned one', async (t) => {
  if (!findExecutable('sgdisk') || !findExecutable('mkfs.ext4') || !findExecutable('mkswap')) {
    t.pass('skipped: sgdisk / mkfs.ext4 / mkswap missing', { skip: true });
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'transfer-target-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const img = join(dir, 'disk.img');
  const plan = gptPlan();
  await run('truncate', ['-s', String(plan.target.disk.sizeBytes), img]);
  for (const s of partitionSteps(plan)) {
    const r = await run(s.argv[0]!, [...s.argv.slice(1, -1), img]);
    t.equal(r.code, 0, `${s.what}: ${r.stderr}`);
  }
  const sf = await run('sfdisk', ['--json', img]);
  t.equal(sf.code, 0);
  const json = sf.stdout.replaceAll(`${img}`, '/dev/vda');
  // Filesystems made with the planned arguments on files at the partitions' sizes, read back by blkid.
  const blkid = new Map<string, Record<string, string>>();
  for (const f of plan.filesystems) {
    const file = join(dir, f.device.slice(5));
    await run('truncate', ['-s', String(f.sizeBytes), file]);
    const argv = mkfsArgv(f);
    const r = await run(argv[0]!, [...argv.slice(1, -1), file]);
    t.equal(r.code, 0, `${argv[0]}: ${r.stderr}`);
    const b = await run('blkid', ['-p', '-o', 'export', file]);
    blkid.set(f.device, Object.fromEntries(b.stdout.trim().split('\n').map((l) => l.split('=', 2) as [string, string])));
    t.equal(blkid.get(f.device)!['UUID'], f.uuid, `${f.device} keeps its UUID`);
  }
  t.equal(blkid.get('/dev/vda2')!['LABEL'], 'root');
  t.equal(layoutMismatch(plan, json, blkid), undefined, 'the planned layout is recognised');
  const other = gptPlan();
  other.partitions[2]!.sizeSectors += 2048;
  t.match(layoutMismatch(other, json, blkid), /\/dev\/vda3 is at/);
  const reformatted = new Map(blkid);
  reformatted.set('/dev/vda3', { ...blkid.get('/dev/vda3')!, UUID: '00000000-0000-0000-0000-000000000000' });
  t.match(layoutMismatch(plan, json, reformatted), /\/dev\/vda3 has UUID/);
  t.equal(layoutMismatch(plan, '', blkid), 'no partition table');
});

t.test('blkid sections', async (t) => {
  const m = parseBlkidSections('@@sfdisk\n{}\n@@blkid /dev/vda2\nUUID=u2\nTYPE=ext4\n@@blkid /dev/vda3\n@@blkid /dev/vda4\nTYPE=swap\n@@end\n');
  t.same([...m.keys()], ['/dev/vda2', '/dev/vda4']);
  t.equal(m.get('/dev/vda2')!['TYPE'], 'ext4');
});

t.test('the probe stops a killed run\'s receiving rsync (working in the mount root), nothing else', async (t) => {
  if (!needExecutables(t, [{ exe: 'rsync', pkg: 'rsync' }])) return;
  const rsync = findExecutable('rsync') ?? 'rsync';
  const dir = await mkdtemp(join(tmpdir(), 'ramboot-probe-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const root = join(dir, 'mnt');
  const elsewhere = join(dir, 'elsewhere');
  await mkdir(join(root, 'home'), { recursive: true });
  await mkdir(elsewhere);
  // a real receiving rsync, as rrsync starts it, waiting for a sender that is gone
  const start = (cwd: string, cmd: string, args: string[]) => {
    const p = spawn(cmd, args, { cwd, stdio: ['pipe', 'ignore', 'ignore'] });
    const exited = new Promise<string>((resolve) => p.on('exit', (code, sig) => resolve(sig ?? String(code))));
    t.teardown(() => { p.kill('SIGKILL'); });
    return { p, exited };
  };
  const stale = start(join(root, 'home'), rsync, ['--server', '-logDtpre.iLsfxC', '--', '.', '.']);
  const other = start(elsewhere, rsync, ['--server', '-logDtpre.iLsfxC', '--', '.', '.']);
  const shell = start(root, 'sleep', ['60']);
  await new Promise((r) => setTimeout(r, 300)); // let them exec (the probe reads /proc)
  const r = spawnSync('sh', ['-s', '--', root, join(dir, 'no-such-disk'), '--'], { input: PROBE, encoding: 'utf8', timeout: 60_000 });
  t.match(r.stderr, new RegExp(`stopped an earlier run's rsync \\(pid ${stale.p.pid}\\)`), 'the stale receiver is named');
  t.match(await stale.exited, /^(SIGTERM|20)$/, 'the stale receiver is stopped (rsync exits 20 on SIGTERM)');
  t.match(r.stdout, /@@sfdisk[\s\S]*@@end/, 'then the disk is read');
  t.equal(other.p.exitCode, null, 'an rsync working elsewhere is left alone');
  t.equal(other.p.signalCode, null);
  t.equal(shell.p.exitCode, null, 'another program in the mount root is left alone');
  t.equal(shell.p.signalCode, null);
});
