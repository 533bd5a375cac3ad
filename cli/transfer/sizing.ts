/**
 * Proportional sizing with lower bounds, in whole units (MiB for partitions, extents for logical
 * volumes): used by plan.ts for the partitions of a disk and the logical volumes of a volume group.
 */

export interface SizeItem {
  /** Size on the source, bytes. */
  source: number;
  /** Lower bound, bytes (used + headroom). */
  min: number;
  /** Kept at its source size (not scaled); `min` still applies. */
  fixed?: boolean;
}

export interface Sized {
  bytes: number;
  sizing: 'scaled' | 'fixed' | 'minimum';
}

export type SizeResult = { ok: true; sizes: Sized[] } | { ok: false; neededBytes: number };

const ceilTo = (v: number, unit: number) => Math.ceil(v / unit) * unit;
const floorTo = (v: number, unit: number) => Math.floor(v / unit) * unit;

/**
 * Sizes items to fit `budget` bytes. Fixed items keep their source size (rounded up to the unit, never
 * below min). The others get `source * scale` (rounded down to the unit) unless that is below their min
 * (then their min, rounded up); when that overflows the budget the scale is lowered for the items not at
 * their minimum (water-filling) until it fits. Fails with the bytes needed when even the minimums do not fit.
 */
export function fitSizes(items: readonly SizeItem[], budget: number, scale: number, unit: number): SizeResult {
  const minOf = (it: SizeItem) => ceilTo(it.fixed ? Math.max(it.source, it.min) : it.min, unit);
  const needed = items.reduce((a, it) => a + minOf(it), 0);
  if (needed > budget) return { ok: false, neededBytes: needed };
  const fixedBytes = items.reduce((a, it) => a + (it.fixed ? minOf(it) : 0), 0);
  const atMin = new Set<number>();
  let k = scale;
  for (let round = 0; round <= items.length; round++) {
    let changed = false;
    for (const [i, it] of items.entries()) {
      if (it.fixed || atMin.has(i)) continue;
      if (floorTo(it.source * k, unit) < minOf(it)) {
        atMin.add(i);
        changed = true;
      }
    }
    const minBytes = [...atMin].reduce((a, i) => a + minOf(items[i]!), 0);
    const free = items.reduce((a, it, i) => a + (it.fixed || atMin.has(i) ? 0 : it.source), 0);
    const room = budget - fixedBytes - minBytes;
    const total = free * k;
    if (total > room && free > 0) {
      k = room / free;
      changed = true;
    }
    if (!changed) break;
  }
  const sizes = items.map((it, i): Sized => {
    if (it.fixed) return { bytes: minOf(it), sizing: 'fixed' };
    if (atMin.has(i)) return { bytes: minOf(it), sizing: 'minimum' };
    return { bytes: Math.max(floorTo(it.source * k, unit), minOf(it)), sizing: 'scaled' };
  });
  const sum = sizes.reduce((a, s) => a + s.bytes, 0);
  if (sum > budget) return { ok: false, neededBytes: sum };
  return { ok: true, sizes };
}
