import { z } from 'zod';
import { ipxeLineProblem } from './ipxe-safe.js';

/**
 * manifest.json of an image directory (<data-dir>/images/<name>/manifest.json).
 * Written by `ramboot build`, read by the server. Extend it; do not rename fields.
 */
export const IMAGE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const IMAGE_FILE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const fileEntry = z.strictObject({
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'sha256 must be 64 lower-case hex digits'),
  size: z.number().int().nonnegative(),
});

export const manifestSchema = z.object({
  schema: z.literal(1),
  name: z.string().regex(IMAGE_NAME_RE, 'image name: lower-case letters, digits, ".", "_", "-"'),
  createdAt: z.string().optional(),
  kernelVersion: z.string().optional(),
  /** File name (a key of `files`) of the kernel. */
  kernel: z.string().regex(IMAGE_FILE_RE),
  /** File names (keys of `files`) of the initrds, in load order. */
  initrd: z.array(z.string().regex(IMAGE_FILE_RE)).min(1),
  /** Every file the server may serve for this image, with its digest. Only these are served. */
  files: z.record(z.string().regex(IMAGE_FILE_RE), fileEntry),
  /**
   * Kernel command line the image expects. The server appends the machine's kernelArgs and the
   * NoCloud seed. Placeholders substituted by the server: @IMAGE_URL@ (URL of this image's
   * directory, no trailing slash) and @PUBLIC_URL@.
   */
  cmdline: z
    .string()
    .max(4096)
    .default('')
    .superRefine((v, ctx) => {
      const p = ipxeLineProblem(v);
      if (p) ctx.addIssue({ code: 'custom', message: `cmdline ${p}` });
      if (/(^|\s)root=/.test(v)) ctx.addIssue({ code: 'custom', message: 'cmdline may not set root=: the root lives in RAM' });
    }),
  /** RAM the image needs to boot, MiB. The boot script refuses machines with less. */
  minRamMiB: z.number().int().positive(),
  packages: z.array(z.object({ name: z.string(), version: z.string() })).default([]),
  build: z.record(z.string(), z.unknown()).default({}),
}).superRefine((m, ctx) => {
  for (const f of [m.kernel, ...m.initrd]) {
    if (!(f in m.files)) ctx.addIssue({ code: 'custom', message: `"${f}" is not listed in files` });
  }
});

export type ImageManifest = z.infer<typeof manifestSchema>;
