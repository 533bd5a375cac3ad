import { readFile } from 'node:fs/promises';
import { assetPath } from '../../common/assets.js';
import type { TransferStep } from './events.js';
import { StageError } from './stage-error.js';
import { execOk, tail, type Remote } from './ssh.js';
import { MARKER, MOUNT_ROOT, unmountTarget, validMountpoint } from './target.js';
import type { Plan } from './types.js';

/**
 * Step 5: boot-assets/transfer/finish.sh on the target (ramboot-fix, initramfs, boot loader, see
 * there), then the marker removed and everything under MOUNT_ROOT unmounted. Step 6 helpers: the
 * `--after` action.
 */

const HOSTNAME_RE = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** The arguments of finish.sh for a plan. */
export function finishArgs(plan: Plan): string[] {
  const esp = plan.boot.esp?.mountpoint ?? '-';
  if (esp !== '-' && !validMountpoint(esp)) throw new StageError('bootloader', `the ESP mount point "${esp}" cannot be used`);
  const host = HOSTNAME_RE.test(plan.source.hostname) && plan.source.hostname.length <= 253 ? plan.source.hostname : '-';
  return [MOUNT_ROOT, plan.target.disk.device, plan.boot.mode, esp, host];
}

export interface FinishHooks {
  onStep: (step: TransferStep) => void;
  note: (msg: string) => void;
  warn: (msg: string) => void;
}

/** Parses finish.sh's stdout protocol as lines arrive. */
export class FinishProtocol {
  failed: { stage: TransferStep; reason: string } | undefined;
  done = false;
  constructor(private readonly hooks: FinishHooks) {}
  line(l: string): void {
    let m: RegExpExecArray | null;
    if ((m = /^@@step (fix|initramfs|bootloader)$/.exec(l))) this.hooks.onStep(m[1] as TransferStep);
    else if ((m = /^@@note (.*)$/.exec(l))) this.hooks.note(m[1]!);
    else if ((m = /^@@warn (.*)$/.exec(l))) this.hooks.warn(m[1]!);
    else if ((m = /^@@failed (fix|initramfs|bootloader) (.*)$/.exec(l))) this.failed = { stage: m[1] as TransferStep, reason: m[2]! };
    else if (l === '@@done') this.done = true;
  }
}

export async function finishTarget(target: Remote, plan: Plan, hooks: FinishHooks): Promise<void> {
  const script = await readFile(assetPath('transfer', 'finish.sh'), 'utf8');
  const proto = new FinishProtocol(hooks);
  const r = await target.script(script, finishArgs(plan), { onStdoutLine: (l) => proto.line(l), timeoutMs: 30 * 60_000 });
  if (proto.failed) throw new StageError(proto.failed.stage, proto.failed.reason);
  if (r.code !== 0 || !proto.done) throw new StageError('fix', `finishing on the target stopped (exit ${r.code}): ${tail(r.stderr)}`);
  hooks.onStep('finish');
  await execOk(target, ['rm', '-f', `${MOUNT_ROOT}/${MARKER}`], 'removing the transfer marker');
  await unmountTarget(target);
}

/** `--after reboot|poweroff`: scheduled on the target (the SSH session ends before it happens). */
export async function afterAction(target: Remote, after: 'reboot' | 'poweroff'): Promise<void> {
  const r = await target.exec(['systemd-run', '--no-block', '--collect', '--on-active=2', 'systemctl', after], { timeoutMs: 60_000 });
  if (r.code !== 0) await execOk(target, ['sh', '-c', '(sleep 2; systemctl "$1") </dev/null >/dev/null 2>&1 &', 'sh', after], `scheduling ${after}`, { timeoutMs: 60_000 });
}
