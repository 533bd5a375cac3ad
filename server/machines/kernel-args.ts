import { ipxeLineProblem } from '../../common/ipxe-safe.js';

/**
 * Extra kernel arguments from the admin. They land inside an iPXE script, so they must not be able to
 * add script lines or trigger iPXE's ${...} expansion, and must not override what ramboot manages.
 * They are split the way the kernel splits its command line (lib/cmdline.c next_arg): words
 * separated by spaces, double quotes group spaces into a word and are dropped, `key="a b"` is key
 * `key`. An unclosed quote would swallow everything after it (BOOTIF=, ds=, initrd=), so it is
 * refused.
 */
const MANAGED = ['root', 'ds', 'initrd', 'BOOTIF'];

/** The x86 kernel's COMMAND_LINE_SIZE: longer command lines are cut, silently. */
export const KERNEL_CMDLINE_MAX = 2048;

/** Kernel-style words of a command line, quotes removed; undefined when a quote is left open. */
export function kernelWords(args: string): string[] | undefined {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quoted = false;
  for (const ch of args) {
    if (ch === '"') {
      quoted = !quoted;
      inWord = true;
    } else if (/\s/.test(ch) && !quoted) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (quoted) return undefined;
  if (inWord) words.push(cur);
  return words;
}

export function kernelArgsProblem(args: string): string | undefined {
  if (args.length > KERNEL_CMDLINE_MAX) return `kernelArgs is longer than ${KERNEL_CMDLINE_MAX} characters`;
  if (!/^[\x20-\x7e]*$/.test(args)) return 'kernelArgs may only contain printable ASCII (no newlines or control characters)';
  const unsafe = ipxeLineProblem(args);
  if (unsafe) return `kernelArgs ${unsafe}`;
  const words = kernelWords(args);
  if (!words) return 'kernelArgs has an unclosed double quote (the kernel would take the rest of the command line as one value)';
  for (const word of words) {
    const key = word.split('=')[0] ?? '';
    if (MANAGED.includes(key)) {
      return key === 'root'
        ? 'kernelArgs may not set root=: ramboot images run from RAM and a root= would make the kernel mount a disk'
        : `kernelArgs may not set ${key}=: ramboot sets it`;
    }
  }
  return undefined;
}

/** The whole command line must fit the kernel's limit, or the end (ds=, initrd=) is cut off. */
export function cmdlineLengthProblem(cmdline: string): string | undefined {
  // +1: the kernel keeps a terminating NUL in the same buffer
  if (cmdline.length + 1 > KERNEL_CMDLINE_MAX) {
    return `the kernel command line would be ${cmdline.length} characters (the image's own line, kernelArgs and what ramboot adds); the kernel keeps only ${KERNEL_CMDLINE_MAX - 1}`;
  }
  return undefined;
}
