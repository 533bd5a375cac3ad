/**
 * iPXE has no quoting. Within one script line it splits on white space and treats a standalone
 * ";", "&&" or "||" as a command separator and a word starting with "#" as the start of a comment
 * (src/core/exec.c); "${" starts a setting expansion; a newline starts a new command. A value that
 * goes into a script line must avoid all of them.
 */
export function ipxeLineProblem(value: string): string | undefined {
  if (/[\r\n]/.test(value)) return 'contains a newline';
  if (!/^[\x20-\x7e]*$/.test(value)) return 'contains characters other than printable ASCII';
  if (value.includes('${')) return 'contains "${" (iPXE would expand it)';
  for (const word of value.split(/\s+/)) {
    if (word === ';' || word === '&&' || word === '||') return `contains "${word}" as a word (iPXE would start a new command)`;
    if (word.startsWith('#')) return `contains a word starting with "#" (iPXE would ignore the rest of the line)`;
  }
  return undefined;
}
