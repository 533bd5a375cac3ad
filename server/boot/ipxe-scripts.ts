import type { Mac } from '../../common/mac.js';
import type { BootDecision } from './booter.js';
import { cmdlineLengthProblem } from '../machines/kernel-args.js';
import type { LoadedImage } from '../images/image-store.js';
import { MAX_TOKEN_LENGTH } from './sessions.js';
import { renderTemplate } from './templates.js';

export function bootstrapScript(publicUrl: string): string {
  return renderTemplate('bootstrap', { publicUrl });
}

/** Placeholder for the session token in cached renders; replaced per request. */
export const TOKEN_PLACEHOLDER = '@@RAMBOOT_SESSION_TOKEN@@';

export function seedUrl(publicUrl: string, mac: Mac, token: string): string {
  return `${publicUrl}/cloud-init/${mac}/${token}/`;
}

export interface ScriptContext {
  mac: Mac;
  hostname?: string;
  publicUrl: string;
  platform?: string;
  kernelArgs: string;
}

/** The command line: image's own, the machine's extra args, then what ramboot manages. */
export function kernelCmdline(image: LoadedImage, ctx: ScriptContext, token: string): string {
  const imageUrl = `${ctx.publicUrl}/images/${image.name}`;
  const base = image.manifest.cmdline.replaceAll('@IMAGE_URL@', imageUrl).replaceAll('@PUBLIC_URL@', ctx.publicUrl);
  const parts = [base, ctx.kernelArgs, `BOOTIF=01-${ctx.mac.replaceAll(':', '-')}`, `ds=nocloud-net;s=${seedUrl(ctx.publicUrl, ctx.mac, token)}`];
  if (ctx.platform === 'efi') parts.push(...image.manifest.initrd.map((f) => `initrd=${f}`));
  return parts.map((p) => p.trim()).filter(Boolean).join(' ');
}

/** Render the per-MAC script for a decision. `token` may be TOKEN_PLACEHOLDER for caching. */
export function machineScript(d: BootDecision, ctx: ScriptContext, token: string): string {
  switch (d.kind) {
    case 'local':
      return renderTemplate('local', { mac: ctx.mac, reason: d.reason });
    case 'refuse':
      return renderTemplate('message', { mac: ctx.mac, reason: d.reason.replaceAll('${', '$ {') });
    case 'ramboot': {
      const imageUrl = `${ctx.publicUrl}/images/${d.image.name}`;
      const initrdLines = d.image.manifest.initrd
        .map((f) => `initrd --name ${f} ${imageUrl}/${f} || goto failed`)
        .join('\n');
      return renderTemplate('ramboot', {
        mac: ctx.mac,
        hostname: ctx.hostname ? `(${ctx.hostname})` : '',
        image: d.image.name,
        mode: d.mode === 'once' ? 'once, then local disk' : 'every boot',
        kernelUrl: `${imageUrl}/${d.image.manifest.kernel}`,
        cmdline: kernelCmdline(d.image, ctx, token),
        initrdLines,
      });
    }
  }
}

/**
 * Why the kernel command line for this machine and image would not fit the kernel's limit, with the
 * longest session token and the EFI initrd= arguments counted; undefined when it fits.
 */
export function cmdlineProblem(image: LoadedImage, ctx: Omit<ScriptContext, 'platform'>): string | undefined {
  const line = kernelCmdline(image, { ...ctx, platform: 'efi' }, 'x'.repeat(MAX_TOKEN_LENGTH));
  return cmdlineLengthProblem(line);
}
