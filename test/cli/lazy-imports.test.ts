/**
 * The command line loads the pool's clients (ioredis, the NATS client) only when a command
 * needs them: on one host (the embedded default) neither is loaded. Checked on the import
 * graph of the sources — every static, non-type `import` reachable from src/cli/main.ts.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** Static value imports: `import x from '…'`, `import { a } from '…'`, `import '…'`; not `import type`, not `import(…)`. */
const STATIC = /^import\s+(?!type\s)(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]/gm;

/** Every package reached by static imports from `entry`, with the chain of files that leads to it. */
function reachedPackages(entry: string): Map<string, string[]> {
  const from = new Map<string, string | undefined>([[entry, undefined]]);
  const packages = new Map<string, string[]>();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.shift()!;
    for (const m of readFileSync(file, 'utf8').matchAll(STATIC)) {
      const spec = m[1]!;
      if (spec.startsWith('.')) {
        const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'));
        if (existsSync(target) && !from.has(target)) {
          from.set(target, file);
          queue.push(target);
        }
      } else if (!spec.startsWith('node:') && !packages.has(spec)) {
        const chain: string[] = [];
        for (let f: string | undefined = file; f !== undefined; f = from.get(f)) chain.push(relative(ROOT, f));
        packages.set(spec, chain);
      }
    }
  }
  return packages;
}

describe('the command line loads the pool clients lazily', () => {
  const packages = reachedPackages(join(ROOT, 'src/cli/main.ts'));

  it('reaches its own dependencies statically (the walk works)', () => {
    expect([...packages.keys()]).toEqual(expect.arrayContaining(['commander', 'lmdb', 'undici']));
  });

  it.each(['ioredis', '@nats-io/jetstream', '@nats-io/transport-node'])('does not import %s statically', (pkg) => {
    expect(packages.get(pkg), `${pkg} is imported by ${packages.get(pkg)?.join(' <- ')}`).toBeUndefined();
  });
});
