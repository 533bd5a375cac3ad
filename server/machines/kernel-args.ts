import { ipxeLineProblem } from '../../common/ipxe-safe.js';

/**
 * Extra kernel arguments from the admin. They land inside an iPXE script, so they must not be able to
 * add script lines or trigger iPXE's ${...} expansion, and must not override what ramboot manages.
 */
const MANAGED = ['root', 'ds', 'initrd', 'BOOTIF'];

export function kernelArgsProblem(args: string): string | undefined {
  if (args.length > 2048) return 'kernelArgs is longer than 2048 characters';
  if (!/^[\x20-\x7e]*$/.test(args)) return 'kernelArgs may only contain printable ASCII (no newlines or control characters)';
  const unsafe = ipxeLineProblem(args);
  if (unsafe) return `kernelArgs ${unsafe}`;
  for (const word of args.split(/\s+/).filter(Boolean)) {
    const key = word.split('=')[0] ?? '';
    if (MANAGED.includes(key)) {
      return key === 'root'
        ? 'kernelArgs may not set root=: ramboot images run from RAM and a root= would make the kernel mount a disk'
        : `kernelArgs may not set ${key}=: ramboot sets it`;
    }
  }
  return undefined;
}
