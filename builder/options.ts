import { resolve } from 'node:path';
import { z } from 'zod';
import { IMAGE_NAME_RE } from '../common/manifest.js';
import { PACKAGE_RE, type Flavour } from './packages.js';

export interface BuildOptions {
  dataDir: string;
  name: string;
  flavour: Flavour;
  include: string[];
  suite: string;
  mirror: string;
  /** Seconds since the epoch stamped on every file (SOURCE_DATE_EPOCH). */
  sourceDateEpoch: number;
}

export const DEFAULT_MIRROR = 'http://deb.debian.org/debian';
export const DEFAULT_SUITE = 'bookworm';

const mirrorSchema = z.string().refine((s) => {
  if (/[\s,'"\\$`]/.test(s)) return false;
  try {
    const u = new URL(s);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.username === '' && u.password === '';
  } catch {
    return false;
  }
}, 'mirror must be an http:// or https:// URL without spaces, commas, quotes or credentials');

const rawSchema = z.strictObject({
  dataDir: z.string().min(1).default('./var'),
  name: z.string().regex(IMAGE_NAME_RE, 'image name: 1-63 of a-z 0-9 . _ - (starting with a letter or digit)').default('default'),
  flavour: z.enum(['cloud', 'lean']).default('cloud'),
  include: z.string().default(''),
  suite: z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'suite: a Debian suite or codename such as bookworm').default(DEFAULT_SUITE),
  mirror: mirrorSchema.default(DEFAULT_MIRROR),
  sourceDateEpoch: z.string().regex(/^[0-9]{1,12}$/, 'SOURCE_DATE_EPOCH must be a number of seconds').optional(),
});

export type RawBuildOptions = z.input<typeof rawSchema>;

/** Validates CLI input (strings) into BuildOptions; throws an Error naming the bad field. */
export function parseBuildOptions(raw: RawBuildOptions): BuildOptions {
  const r = rawSchema.safeParse(raw);
  if (!r.success) {
    const msg = r.error.issues.map((i) => `--${i.path.join('.').replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}: ${i.message}`).join('; ');
    throw new Error(`invalid build options: ${msg}`);
  }
  const o = r.data;
  const include = o.include.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const p of include) {
    if (!PACKAGE_RE.test(p)) throw new Error(`invalid build options: --include: "${p}" is not a Debian package name`);
  }
  return {
    dataDir: resolve(o.dataDir),
    name: o.name,
    flavour: o.flavour,
    include,
    suite: o.suite,
    mirror: o.mirror.replace(/\/+$/, ''),
    sourceDateEpoch: o.sourceDateEpoch === undefined ? Math.floor(Date.now() / 1000) : Number(o.sourceDateEpoch),
  };
}
