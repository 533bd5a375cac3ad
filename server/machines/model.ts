import { randomBytes } from 'node:crypto';
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

const HEX64 = /^[0-9a-f]{64}$/;
const DISK_PATH_RE = /^\/dev\/disk\/by-(id|path)\/[A-Za-z0-9._:+@=-]{1,200}$/;
/** Printable ASCII, no quotes or backslashes: the agent matches these against lsblk output. */
const diskText = z.string().min(1).max(128).regex(/^[\x20-\x7e]+$/, 'printable ASCII').refine((v) => !/["\\]/.test(v), 'no quotes or backslashes');

export const DEPLOY_AFTER = ['reboot', 'poweroff', 'stay'] as const;

/** Which disk the agent writes: "auto" (the only non-removable disk), a stable /dev/disk path, or a match. */
export const deployDiskSchema = z.union([
  z.literal('auto'),
  z
    .string()
    .regex(DISK_PATH_RE, 'disk: "auto", /dev/disk/by-id/NAME or /dev/disk/by-path/NAME')
    .refine((v) => !/\/\.\.?$/.test(v), 'disk: "." and ".." are not device names'),
  z
    .strictObject({
      serial: diskText.optional(),
      model: diskText.optional(),
      minSizeGiB: z.number().positive().max(1 << 20).optional(),
    })
    .refine((v) => v.serial !== undefined || v.model !== undefined || v.minSizeGiB !== undefined, 'disk: give serial, model or minSizeGiB'),
]);
export type DeployDisk = z.infer<typeof deployDiskSchema>;

const deployUrl = z
  .string()
  .max(2048)
  .regex(/^[\x21-\x7e]+$/, 'url: printable ASCII without spaces')
  .refine((v) => {
    try {
      const u = new URL(v);
      return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
    } catch {
      return false;
    }
  }, 'url: an absolute http:// or https:// URL');

const deployFields = {
  artifact: z.string().regex(IMAGE_NAME_RE, 'artifact: an artifact name (lower-case letters, digits, ".", "_", "-")').optional(),
  url: deployUrl.optional(),
  sha256: z.string().regex(HEX64, 'sha256: 64 lower-case hex digits').optional(),
  disk: deployDiskSchema.default('auto'),
  after: z.enum(DEPLOY_AFTER).default('reboot'),
  grow: z.boolean().default(false),
};

function deploySourceCheck(v: { artifact?: string | undefined; url?: string | undefined; sha256?: string | undefined }, ctx: z.RefinementCtx): void {
  if ((v.artifact === undefined) === (v.url === undefined)) ctx.addIssue({ code: 'custom', message: 'deploy: give either artifact or url (with sha256)' });
  else if (v.url !== undefined && v.sha256 === undefined) ctx.addIssue({ code: 'custom', message: 'deploy: url needs its sha256' });
  else if (v.artifact !== undefined && v.sha256 !== undefined) ctx.addIssue({ code: 'custom', message: 'deploy: sha256 comes from the artifact store; do not give it with artifact' });
}

/** A deploy as an admin sets it (PUT/PATCH). */
export const deploySpecSchema = z.strictObject(deployFields).superRefine(deploySourceCheck);
export type DeploySpec = z.infer<typeof deploySpecSchema>;

/** A new deploy attempt id: the agent and the status reports name the attempt by it. */
export const newDeployId = (): string => randomBytes(9).toString('base64url');

/** A deploy as stored: the spec plus the attempt id the server assigned when it was set. */
export const deployRecordSchema = z
  .strictObject({ ...deployFields, id: z.string().regex(/^[A-Za-z0-9_-]{8,64}$/).default(newDeployId), setAt: z.string().optional() })
  .superRefine(deploySourceCheck);
export type DeployRecord = z.infer<typeof deployRecordSchema>;

/** The outcome of the last finished deploy attempt (written on succeeded / failed). */
export const deployStatusSchema = z.strictObject({
  id: z.string(),
  state: z.enum(['succeeded', 'failed']),
  finishedAt: z.string(),
  bytes: z.number().nonnegative().optional(),
  seconds: z.number().nonnegative().optional(),
  stage: z.string().optional(),
  message: z.string().optional(),
  disk: z.string().optional(),
});
export type DeployStatus = z.infer<typeof deployStatusSchema>;

/** Body of PUT /api/v1/machines/{mac}. */
export const machineSpecSchema = z.strictObject({
  hostname: hostname.optional(),
  sshKeys: z.array(sshKey).max(64, 'at most 64 SSH keys'),
  boot: z.enum(BOOT_MODES).default('ramboot'),
  image: imageName.default('default'),
  kernelArgs: kernelArgs.default(''),
  userData: userData.default({}),
  deploy: deploySpecSchema.optional(),
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
  deploy: deploySpecSchema.nullable().optional(),
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
  /**
   * Boot sessions whose phone-home was accepted (newest last, bounded): "<id>~<expiry, unix
   * seconds>" (records from before the expiry was kept: "<id>").
   */
  usedSessions: z.array(z.string()).default([]),
  /**
   * Expiry of the newest session whose phone-home was accepted. Sessions expire in mint order, so a
   * session expiring earlier is older: it can never phone home again, however many came after it.
   */
  sessionsUsedUntil: z.iso.datetime().optional(),
  /** The last deploy attempt that finished. */
  deploy: deployStatusSchema.optional(),
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
  deploy: deployRecordSchema.optional(),
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
  if (status.usedSessions.some((e) => e === session.id || e.startsWith(`${session.id}~`))) return true;
  return status.sessionsUsedUntil !== undefined && session.expiresAt.getTime() < Date.parse(status.sessionsUsedUntil);
}

/**
 * usedSessions after `session` phoned home: the newest `keep` entries, plus every entry that
 * expires in the same second as the newest used session. Those are told from a new session of that
 * second by their id alone (expiries have a one-second grain), so they may not be dropped; all
 * others expire strictly before sessionsUsedUntil and stay refused by it. The exception is bounded by
 * how many sessions one machine can be given in one second.
 */
export function recordUsedSession(status: MachineStatus, session: { id: string; expiresAt: Date }, keep: number): { usedSessions: string[]; sessionsUsedUntil: string } {
  const sec = (ms: number): number => Math.floor(ms / 1000);
  const prev = status.sessionsUsedUntil !== undefined ? Date.parse(status.sessionsUsedUntil) : 0;
  const until = Math.max(prev, session.expiresAt.getTime());
  const all = [...status.usedSessions, `${session.id}~${sec(session.expiresAt.getTime())}`];
  const newestSecond = (e: string): boolean => {
    const m = /~(\d{1,12})$/.exec(e);
    return m !== null && Number(m[1]) >= sec(until);
  };
  const usedSessions = all.filter((e, i) => i >= all.length - keep || newestSecond(e));
  return { usedSessions, sessionsUsedUntil: new Date(until).toISOString() };
}
