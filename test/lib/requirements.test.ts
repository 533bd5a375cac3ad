import t from 'tap';
import { checkRequirement, findExecutable, reportMissing, type RequirementTest } from './requirements.js';

// reportMissing() against a recording stand-in for the tap Test, with CI unset and CI=true.

function recorder(): RequirementTest & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    comment: (...args: unknown[]) => {
      calls.push(`comment ${args.join(' ')}`);
    },
    pass: ((msg: string, extra?: { skip?: string }) => {
      calls.push(`pass ${msg} skip=${extra?.skip ?? ''}`);
      return true;
    }) as RequirementTest['pass'],
    fail: ((msg: string) => {
      calls.push(`fail ${msg}`);
      return false;
    }) as RequirementTest['fail'],
  };
}

function withCI<T>(value: string | undefined, fn: () => T): T {
  const saved = process.env['CI'];
  if (value === undefined) delete process.env['CI'];
  else process.env['CI'] = value;
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env['CI'];
    else process.env['CI'] = saved;
  }
}

t.test('nothing missing: true, nothing recorded', async (t) => {
  const r = recorder();
  t.equal(withCI('true', () => reportMissing(r, [])), true);
  t.same(r.calls, []);
});

t.test('missing outside CI: loud comment + skipped point, no failure', async (t) => {
  const r = recorder();
  t.equal(withCI(undefined, () => reportMissing(r, ['needs root (running as uid 1000)'])), false);
  const log = r.calls.join('\n');
  t.match(log, /^comment !!!!! SKIPPING: missing test requirement: needs root/m);
  t.match(log, /^pass missing requirement: needs root .* skip=needs root/m);
  t.notMatch(log, /^fail/m);
});

t.test('missing under CI=true: a failure, no skip', async (t) => {
  const r = recorder();
  t.equal(withCI('true', () => reportMissing(r, ['a', 'b'])), false);
  const log = r.calls.join('\n');
  t.match(log, /^fail missing test requirement under CI=true: a; b$/m);
  t.notMatch(log, /skip=|SKIPPING/);
});

t.test('checks', async (t) => {
  t.equal(findExecutable('definitely-not-a-real-program-xyz'), undefined);
  t.type(findExecutable('node') ?? findExecutable('sh'), 'string');
  t.equal(checkRequirement('root'), process.getuid?.() === 0 ? undefined : `needs root (running as uid ${process.getuid?.()})`);
});
