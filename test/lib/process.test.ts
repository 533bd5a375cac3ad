import t from 'tap';
import { existsSync } from 'node:fs';
import { ManagedProcess, cleanConsoleText } from './process.js';
import { requirements } from './requirements.js';

// The line matching and process-tree handling every QEMU/netns/server test relies on.

function node(name: string, script: string): ManagedProcess {
  return new ManagedProcess({ name, argv: [process.execPath, '-e', script] });
}

t.test('cleanConsoleText strips ANSI escapes and control characters', async (t) => {
  t.equal(cleanConsoleText('\x1bc\x1b[?7l\x1b[2J\x1b[0;1miPXE\x1b[0m ok\r'), 'iPXE ok');
  t.equal(cleanConsoleText('50%\b\b\b   \b\b\b ok'), '50%    ok');
});

t.test('waitFor matches complete lines only, unless partialLines', async (t) => {
  if (!requirements(t, ['setpriv'])) return;
  const p = node('partial', `
    process.stdout.write('x mac=52');
    setTimeout(() => process.stdout.write(':54:00:12:34:56\\nprompt> '), 300);
    setTimeout(() => process.exit(0), 5000);
  `);
  t.teardown(() => p.stop());
  const m = await p.waitFor(/mac=(\S+)/, { timeoutMs: 10_000 });
  t.equal(m[1], '52:54:00:12:34:56', 'not matched on the first half of the line');
  const prompt = await p.waitFor(/prompt>/, { timeoutMs: 10_000, partialLines: true });
  t.ok(prompt, 'a prompt without newline is found with partialLines');
});

t.test('waitFor: sequential cursor, fail-fast, exit and timeout', async (t) => {
  if (!requirements(t, ['setpriv'])) return;
  const p = node('seq', `
    console.log('A 1'); console.log('A 2'); console.log('BAD thing');
    setTimeout(() => process.exit(3), 500);
  `);
  t.teardown(() => p.stop());
  t.equal((await p.waitFor(/A (\d)/))[1], '1');
  t.equal((await p.waitFor(/A (\d)/))[1], '2', 'second waitFor continues after the first match');
  t.equal((await p.waitFor(/A (\d)/, { fromStart: true }))[1], '1', 'fromStart rescans');
  await t.rejects(p.waitFor(/never/, { failOn: /BAD/, fromStart: true }), /fail-fast pattern \/BAD\/ matched "BAD thing"/);
  await t.rejects(p.waitFor(/never/, { timeoutMs: 20_000 }), /exited \(code 3/);
  const info = await p.exited;
  t.equal(info.code, 3);
  const q = node('slow', 'setTimeout(() => {}, 60000)');
  t.teardown(() => q.stop());
  await t.rejects(q.waitFor(/never/, { timeoutMs: 200 }), /timed out after 200 ms/);
});

t.test('stop() kills the whole process tree', async (t) => {
  if (!requirements(t, ['setpriv'])) return;
  // parent spawns a grandchild (its own node) and prints its pid
  const p = node('tree', `
    const { spawn } = require('node:child_process');
    const c = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    console.log('CHILD ' + c.pid);
    setInterval(() => {}, 1000);
  `);
  const pid = Number((await p.waitFor(/CHILD (\d+)/, { timeoutMs: 20_000 }))[1]);
  t.ok(existsSync(`/proc/${pid}`), 'grandchild running');
  await p.stop(2000);
  const deadline = Date.now() + 5000;
  while (existsSync(`/proc/${pid}`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.notOk(existsSync(`/proc/${pid}`), 'grandchild gone after stop()');
});
