import { isIP } from 'node:net';
import { z } from 'zod';
import { jsonDepth, MAX_JSON_DEPTH } from '../../common/json-limits.js';
import { IMAGE_NAME_RE } from '../../common/manifest.js';
import { hostnameProblem } from './hostname.js';
import { kernelArgsProblem } from './kernel-args.js';
import { normalizeSshKey, SshKeyError } from './ssh-key.js';

export const BOOT_MODES = ['ramboot', 'once', 'local'] as const;
export type BootMode = (typeof BOOT_MODES)[number];

const hostname = z
  .string()
  .superRefine((v, ctx) => {
    const p = hostnameProblem(v);
    if (p) ctx.addIssue({ code: 'custom', message: p });
  })
  .transform((v) => v.toLowerCase());

const sshKey = z.string().transform((v, ctx) => {
  try {
    return normalizeSshKey(v);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: e instanceof SshKeyError ? e.message : String(e) });
    return z.NEVER;
  }
});

const kernelArgs = z.string().superRefine((v, ctx) => {
  const p = kernelArgsProblem(v);
  if (p) ctx.addIssue({ code: 'custom', message: p });
});

const userData = z
  .record(z.string(), z.unknown())
  .superRefine((v, ctx) => {
    if ('phone_home' in v) {
      ctx.addIssue({ code: 'custom', message: 'phone_home is managed by ramboot (it reports the machine ready)' });
    }
    // the generated #cloud-config nests userData one level down
    if (jsonDepth(v) > MAX_JSON_DEPTH - 1) {
      ctx.addIssue({ code: 'custom', message: `userData is nested deeper than ${MAX_JSON_DEPTH - 1} levels` });
    }
  });

const imageName = z.string().regex(IMAGE_NAME_RE, 'image name: lower-case letters, digits, ".", "_", "-" (max 63)');

/** Body of PUT /api/v1/machines/{mac}. */
export const machineSpecSchema = z.strictObject({
  hostname: hostname.optional(),
  sshKeys: z.array(sshKey).max(64, 'at most 64 SSH keys'),
  boot: z.enum(BOOT_MODES).default('ramboot'),
  image: imageName.default('default'),
  kernelArgs: kernelArgs.default(''),
  userData: userData.default({}),
});
export type MachineSpec = z.infer<typeof machineSpecSchema>;

/** Body of PATCH: every field optional; null removes an optional field (JSON merge patch for top level). */
export const machinePatchSchema = z.strictObject({
  hostname: hostname.nullable().optional(),
  sshKeys: z.array(sshKey).max(64, 'at most 64 SSH keys').optional(),
  boot: z.enum(BOOT_MODES).optional(),
  image: imageName.optional(),
  kernelArgs: kernelArgs.nullable().optional(),
  userData: userData.nullable().optional(),
});
export type MachinePatch = z.infer<typeof machinePatchSchema>;

/** What the server learns about a machine (written by the server, shown by the API). */
export const machineStatusSchema = z.object({
  /** registered | discovered | ready */
  state: z.enum(['registered', 'discovered', 'ready']).default('registered'),
  readyAt: z.string().optional(),
  ip: z.string().refine((v) => isIP(v) !== 0, 'status.ip must be an IP address').optional(),
  reportedHostname: hostname.optional(),
  hostKeys: z.array(z.string()).default([]),
  /** Boot sessions whose phone-home was accepted (newest last, bounded). */
  usedSessions: z.array(z.string()).default([]),
  /**
   * Expiry of the newest session whose phone-home was accepted. Sessions expire in mint order, so a
   * session expiring earlier is older: it can never phone home again, however many came after it.
   */
  sessionsUsedUntil: z.iso.datetime().optional(),
});
export type MachineStatus = z.infer<typeof machineStatusSchema>;

/** A machine as stored: one JSON file per machine. Hand edits are validated against this. */
export const machineRecordSchema = z.strictObject({
  mac: z.string(),
  hostname: hostname.optional(),
  sshKeys: z.array(sshKey).max(64).default([]),
  boot: z.enum(BOOT_MODES).default('ramboot'),
  image: imageName.default('default'),
  kernelArgs: kernelArgs.default(''),
  userData: userData.default({}),
  /** Created by an unknown MAC asking to boot; false once an admin registers it. */
  discovered: z.boolean().default(false),
  createdAt: z.string().default(() => new Date().toISOString()),
  updatedAt: z.string().default(() => new Date().toISOString()),
  revision: z.number().int().nonnegative().default(1),
  status: machineStatusSchema.default({ state: 'registered', hostKeys: [], usedSessions: [] }),
});
export type MachineRecord = z.infer<typeof machineRecordSchema>;

/** Whether a boot session has phoned home already (or is older than one that has): it may not again. */
export function isSessionUsed(status: MachineStatus, session: { id: string; expiresAt: Date }): boolean {
  if (status.usedSessions.includes(session.id)) return true;
  return status.sessionsUsedUntil !== undefined && session.expiresAt.getTime() < Date.parse(status.sessionsUsedUntil);
}
