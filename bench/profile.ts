/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof`): the top functions by self time, and
 * self time by area (a package under node_modules, a file of src/, node internals, GC, idle).
 *
 * Usage: `npx tsx bench/profile.ts FILE.cpuprofile [--top 30] [--json]`; `run.ts --cpu-prof`
 * calls `summariseProfile` itself.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  name: string;
  where: string;
  selfMs: number;
  pct: number;
}

export interface ProfileSummary {
  file: string;
  totalMs: number;
  /** Sampled time not idle, ms. */
  busyMs: number;
  top: ProfileEntry[];
  areas: Array<{ area: string; selfMs: number; pct: number }>;
  /** The project's own functions (src/) by inclusive time: what each step costs with what it calls. */
  srcInclusive: ProfileEntry[];
}

/** Where a frame lives, short: `undici/lib/dispatcher/client-h1.js`, `src/domain/merge.js`, `node:internal/...`. */
function shortUrl(url: string): string {
  if (url === '') return '';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) return url.slice(nm + '/node_modules/'.length);
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return `src/${url.slice(dist + '/dist/'.length)}`;
  // Run from sources (tsx): …/src/x.ts, …/bench/x.ts
  const src = Math.max(url.lastIndexOf('/src/'), url.lastIndexOf('/bench/'));
  if (src >= 0) return url.slice(src + 1);
  if (url.startsWith('node:')) return url;
  return url.replace(/^file:\/\//, '');
}

function areaOf(frame: CallFrame): string {
  const name = frame.functionName;
  if (frame.url === '') {
    if (name === '(garbage collector)') return '(garbage collector)';
    if (name === '(idle)') return '(idle)';
    if (name === '(program)') return '(program: native, not JS)';
    return '(native/builtin)';
  }
  const u = shortUrl(frame.url);
  if (u.startsWith('node:')) return `node:${u.slice(5).split('/').slice(0, 2).join('/')}`;
  if (u.startsWith('src/')) return u.split('/').slice(0, 3).join('/');
  if (u.startsWith('bench/')) return 'bench';
  const parts = u.split('/');
  const pkg = parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0];
  return pkg;
}

export function summariseProfile(file: string, topN = 30): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; attribute it to that sample's node.
  for (let i = 0; i < p.samples.length; i++) {
    const d = p.timeDeltas[i] ?? 0;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + d);
  }
  const fn = new Map<string, ProfileEntry>();
  const areas = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const node = byId.get(id);
    if (!node) continue;
    const ms = us / 1000;
    total += ms;
    const f = node.callFrame;
    if (f.functionName === '(idle)') idle += ms;
    const where = f.url ? `${shortUrl(f.url)}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName}\u0000${where}`;
    const e = fn.get(key) ?? { name: f.functionName || '(anonymous)', where, selfMs: 0, pct: 0 };
    e.selfMs += ms;
    fn.set(key, e);
    const a = areaOf(f);
    areas.set(a, (areas.get(a) ?? 0) + ms);
  }
  const busy = total - idle;
  // Inclusive time of src/ functions: walk each sampled node's stack once.
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, ProfileEntry>();
  for (const [id, us] of self) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)?.callFrame;
      if (!f || !shortUrl(f.url).startsWith('src/')) continue;
      const where = `${shortUrl(f.url)}:${f.lineNumber + 1}`;
      const key = `${f.functionName}\u0000${where}`;
      if (seen.has(key)) continue;
      seen.add(key);
      const e = incl.get(key) ?? { name: f.functionName || '(anonymous)', where, selfMs: 0, pct: 0 };
      e.selfMs += us / 1000;
      incl.set(key, e);
    }
  }
  const top = [...fn.values()]
    .filter((e) => e.name !== '(idle)')
    .sort((a, b) => b.selfMs - a.selfMs)
    .slice(0, topN)
    .map((e) => ({ ...e, selfMs: round1(e.selfMs), pct: round1((e.selfMs / busy) * 100) }));
  return {
    file,
    totalMs: round1(total),
    busyMs: round1(busy),
    top,
    areas: [...areas.entries()]
      .filter(([a]) => a !== '(idle)')
      .sort((a, b) => b[1] - a[1])
      .map(([area, ms]) => ({ area, selfMs: round1(ms), pct: round1((ms / busy) * 100) })),
    srcInclusive: [...incl.values()]
      .sort((a, b) => b.selfMs - a.selfMs)
      .slice(0, topN)
      .map((e) => ({ ...e, selfMs: round1(e.selfMs), pct: round1((e.selfMs / busy) * 100) })),
  };
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

export function formatProfile(s: ProfileSummary, topAreas = 15, srcTop = 15): string {
  const lines: string[] = [];
  lines.push(`profile ${s.file}`);
  lines.push(`  sampled ${(s.totalMs / 1000).toFixed(1)} s, busy (not idle) ${(s.busyMs / 1000).toFixed(1)} s`);
  lines.push('  self time by area (% of busy):');
  for (const a of s.areas.slice(0, topAreas)) lines.push(`    ${a.pct.toFixed(1).padStart(5)}%  ${a.selfMs.toFixed(0).padStart(7)} ms  ${a.area}`);
  lines.push('  top functions by self time (% of busy):');
  for (const e of s.top) lines.push(`    ${e.pct.toFixed(1).padStart(5)}%  ${e.selfMs.toFixed(0).padStart(7)} ms  ${e.name}  ${e.where}`);
  if (srcTop > 0) {
    lines.push('  src/ functions by inclusive time (with what they call; % of busy):');
    for (const e of s.srcInclusive.slice(0, srcTop)) lines.push(`    ${e.pct.toFixed(1).padStart(5)}%  ${e.selfMs.toFixed(0).padStart(7)} ms  ${e.name}  ${e.where}`);
  }
  return lines.join('\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith('--'));
  if (!file) {
    console.error('usage: tsx bench/profile.ts FILE.cpuprofile [--top N] [--json]');
    process.exit(2);
  }
  const ti = args.indexOf('--top');
  const s = summariseProfile(file, ti >= 0 ? Number(args[ti + 1]) : 30);
  console.log(args.includes('--json') ? JSON.stringify(s, null, 2) : formatProfile(s));
}
