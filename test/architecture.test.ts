import t from 'tap';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { REPO_ROOT } from './lib/paths.js';

/**
 * Rooms and who may import whom (docs/architecture.md). Test files (*.test.ts) may import anything;
 * shipped code may import only the rooms listed for it, and never test/ or bench/.
 */
const ALLOWED: Record<string, readonly string[]> = {
  common: ['common'],
  builder: ['builder', 'common'],
  server: ['server', 'common'],
  cli: ['cli', 'server', 'builder', 'common'],
  'boot-assets': ['boot-assets', 'common'],
  bench: ['bench', 'test', 'server', 'builder', 'common', 'cli'],
  test: ['test', 'server', 'builder', 'common', 'cli', 'boot-assets'],
};

function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...tsFiles(p));
    else if (e.isFile() && e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Relative import specifiers of a source file (static, re-export and dynamic imports). */
export function relativeImports(source: string): string[] {
  const out: string[] = [];
  for (const m of source.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g)) out.push(m[1]!);
  return out;
}

function roomOf(repoPath: string): string {
  return repoPath.split('/')[0] ?? '';
}

/** Every import that breaks the room rules, as "file -> target". */
export function violations(root: string): string[] {
  const bad: string[] = [];
  for (const room of Object.keys(ALLOWED)) {
    const dir = join(root, room);
    if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) continue;
    for (const file of tsFiles(dir)) {
      const from = relative(root, file);
      if (file.endsWith('.test.ts')) continue;
      for (const spec of relativeImports(readFileSync(file, 'utf8'))) {
        const target = relative(root, resolve(dirname(file), spec));
        if (!ALLOWED[room]!.includes(roomOf(target))) bad.push(`${from} -> ${target}`);
      }
    }
  }
  return bad;
}

t.test('builder and server never import each other; shipped code never imports test/ or bench/', async (t) => {
  t.same(violations(REPO_ROOT), [], 'no import crosses the room rules');
});

t.test('the check sees a forbidden import when there is one', async (t) => {
  t.same(relativeImports("import { a } from '../server/x.js';\nexport { b } from './y.js';\nawait import('../test/z.js');\nimport './side.js';"), ['../server/x.js', './y.js', '../test/z.js', './side.js']);
  const { mkdtempSync, mkdirSync, writeFileSync, rmSync } = await import('node:fs');
  const root = mkdtempSync(join((await import('node:os')).tmpdir(), 'ramboot-arch-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  for (const d of ['builder', 'server/http', 'test/lib', 'common']) mkdirSync(join(root, d), { recursive: true });
  writeFileSync(join(root, 'builder/build.ts'), "import { log } from '../server/log.js';\nimport { m } from '../common/manifest.js';\n");
  writeFileSync(join(root, 'server/http/app.ts'), "import { fake } from '../../test/lib/fake.js';\n");
  writeFileSync(join(root, 'server/http/app.test.ts'), "import { fake } from '../../test/lib/fake.js';\n");
  writeFileSync(join(root, 'common/x.ts'), "import { y } from '../builder/y.js';\n");
  t.same(violations(root).sort(), ['builder/build.ts -> server/log.js', 'common/x.ts -> builder/y.js', 'server/http/app.ts -> test/lib/fake.js']);
});
