/**
 * Bounds on JSON that ramboot stores and renders. A record nested thousands deep parses fine but
 * overflows the stack later (structuredClone, JSON.stringify, YAML rendering), so depth is checked
 * before anything is stored, without recursion.
 */
export const MAX_JSON_DEPTH = 32;

/** Nesting depth of a parsed JSON value (a scalar is 0, {} or [] is 1). Iterative. */
export function jsonDepth(value: unknown): number {
  let max = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    const depth = d + 1;
    if (depth > max) max = depth;
    if (depth > MAX_JSON_DEPTH + 1) return depth; // deep enough to refuse: stop walking
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth]);
  }
  return max;
}

/**
 * Nesting depth of JSON text, counted over brackets outside strings: a body can be refused before
 * it is parsed at all.
 */
export function jsonTextDepth(text: string | Buffer): number {
  const s = typeof text === 'string' ? Buffer.from(text) : text;
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) max = depth;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return max;
}
