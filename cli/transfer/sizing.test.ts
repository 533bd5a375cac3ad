import t from 'tap';
import { fitSizes } from './sizing.js';

const MiB = 2 ** 20;

t.test('scaled in proportion, rounded down to the unit', async (t) => {
  const r = fitSizes([{ source: 100 * MiB, min: MiB }, { source: 300 * MiB, min: MiB }], 1000 * MiB, 2, MiB);
  t.ok(r.ok);
  if (r.ok) t.same(r.sizes, [{ bytes: 200 * MiB, sizing: 'scaled' }, { bytes: 600 * MiB, sizing: 'scaled' }]);
  const odd = fitSizes([{ source: 10 * MiB + 5, min: MiB }], 100 * MiB, 1.5, MiB);
  t.ok(odd.ok && odd.sizes[0]!.bytes === 15 * MiB, 'whole MiB');
});

t.test('fixed items keep their size; minimums raise small ones; the rest shrink to fit', async (t) => {
  // Budget 1000: fixed 100; item b needs 500 at least; a and c share the rest 1:1.
  const r = fitSizes([
    { source: 100 * MiB, min: MiB, fixed: true },
    { source: 400 * MiB, min: MiB },
    { source: 100 * MiB, min: 500 * MiB },
    { source: 400 * MiB, min: MiB },
  ], 1000 * MiB, 1, MiB);
  t.ok(r.ok);
  if (!r.ok) return;
  t.same(r.sizes.map((s) => s.sizing), ['fixed', 'scaled', 'minimum', 'scaled']);
  t.equal(r.sizes[2]!.bytes, 500 * MiB);
  t.equal(r.sizes[1]!.bytes, 200 * MiB, 'the rest shrank in proportion');
  t.ok(r.sizes.reduce((a, s) => a + s.bytes, 0) <= 1000 * MiB, 'fits the budget');
});

t.test('a growing target never takes a minimum away, and the sum fits', async (t) => {
  for (const k of [0.3, 0.5, 1, 1.7, 10]) {
    const items = [{ source: 1200 * MiB, min: 300 * MiB }, { source: 700 * MiB, min: 120 * MiB }, { source: 256 * MiB, min: 256 * MiB, fixed: true }];
    const budget = Math.floor(2200 * k) * MiB;
    const r = fitSizes(items, budget, k, MiB);
    if (!r.ok) {
      t.ok(r.neededBytes > budget, `k=${k}: refused with ${r.neededBytes} > ${budget}`);
      continue;
    }
    r.sizes.forEach((s, i) => t.ok(s.bytes >= items[i]!.min, `k=${k} item ${i}: ${s.bytes} >= min`));
    t.ok(r.sizes.reduce((a, s) => a + s.bytes, 0) <= budget, `k=${k}: fits`);
  }
});

t.test('refusal with the bytes needed when the minimums do not fit', async (t) => {
  const r = fitSizes([{ source: 100 * MiB, min: 300 * MiB }, { source: 50 * MiB, min: 50 * MiB, fixed: true }], 200 * MiB, 1, MiB);
  t.same(r, { ok: false, neededBytes: 350 * MiB });
});

t.test('extents as the unit (LVs)', async (t) => {
  const ext = 4 * MiB;
  const r = fitSizes([{ source: 1200 * MiB, min: ext }, { source: 200 * MiB, min: ext, fixed: true }], 2000 * MiB, 1.5, ext);
  t.ok(r.ok);
  if (r.ok) {
    t.equal(r.sizes[0]!.bytes % ext, 0);
    t.equal(r.sizes[0]!.bytes, 1800 * MiB);
    t.equal(r.sizes[1]!.bytes, 200 * MiB);
  }
});
