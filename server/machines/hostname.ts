/** RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens, 1-63 chars each, <= 253 total. */
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function hostnameProblem(name: string): string | undefined {
  if (name.length === 0) return 'hostname is empty';
  if (name.length > 253) return 'hostname is longer than 253 characters';
  const labels = name.toLowerCase().split('.');
  for (const l of labels) {
    if (l.length === 0) return 'hostname has an empty label (two dots or a leading/trailing dot)';
    if (l.length > 63) return `hostname label "${l.slice(0, 20)}..." is longer than 63 characters`;
    if (!LABEL.test(l)) {
      return `hostname label "${l.slice(0, 63)}" is not RFC 1123 (letters, digits and inner hyphens only)`;
    }
  }
  return undefined;
}
