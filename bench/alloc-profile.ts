/**
 * Summarises an allocation profile written by `bench/alloc-preload.mjs`: total bytes allocated
 * and the functions that allocated most (self), with KB per export when `--exports N` is given.
 *
 *   npx tsx bench/alloc-profile.ts /tmp/alloc-1234.heapprofile --exports 20000 [--top 30]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface Node {
  selfSize: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children: Node[];
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { exports: { type: 'string' }, top: { type: 'string', default: '30' } } });
if (positionals.length !== 1) {
  console.error('usage: npx tsx bench/alloc-profile.ts FILE [--exports N] [--top N]');
  process.exit(2);
}
const profile = JSON.parse(readFileSync(positionals[0], 'utf8')) as { head: Node };
const exports = values.exports === undefined ? undefined : Number(values.exports);
const bySite = new Map<string, number>();
let total = 0;
const stack: Node[] = [profile.head];
while (stack.length > 0) {
  const n = stack.pop() as Node;
  total += n.selfSize;
  const f = n.callFrame;
  const where = f.url === '' ? '' : ` ${f.url.replace(/^.*\/(dist|src|node_modules)\//, '$1/')}:${f.lineNumber + 1}`;
  const site = `${f.functionName || '(anonymous)'}${where}`;
  bySite.set(site, (bySite.get(site) ?? 0) + n.selfSize);
  for (const c of n.children) stack.push(c);
}
const perExport = (bytes: number): string => (exports ? `${(bytes / exports / 1024).toFixed(2).padStart(6)} KB/export` : '');
console.log(`allocated ${(total / 1e6).toFixed(0)} MB${exports ? ` = ${(total / exports / 1024).toFixed(1)} KB per export` : ''} (sampled every 4 KB)`);
for (const [site, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))) {
  console.log(`${((100 * bytes) / total).toFixed(1).padStart(5)}%  ${(bytes / 1e6).toFixed(1).padStart(6)} MB  ${perExport(bytes)}  ${site}`);
}
