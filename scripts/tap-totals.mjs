// Prints tap's totals as one plain line: "N passed, N failed[, N skipped]".
// Reads the summary line tap's reporter ends with: "# { total: N, pass: N, fail: N, skip: N }".
import { readFileSync } from 'node:fs';

const text = readFileSync(process.argv[2] ?? '/dev/stdin', 'utf8');
const lines = text.split('\n').filter((l) => /^# \{ total: \d+/.test(l.trim()));
const last = lines.at(-1);
if (!last) {
  console.log('0 passed, 1 failed');
  console.error('tap-totals: no tap summary found in the test output');
  process.exit(0);
}
const num = (k) => Number(new RegExp(`\\b${k}: (\\d+)`).exec(last)?.[1] ?? 0);
const pass = num('pass');
const fail = num('fail');
const skip = num('skip');
const todo = num('todo');
let out = `${pass} passed, ${fail} failed`;
if (skip + todo > 0) out += `, ${skip + todo} skipped`;
console.log(out);
