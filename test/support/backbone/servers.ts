/**
 * The backbone's servers: a real nats-server (JetStream) and redis-server on free ports and a
 * temporary folder for configs and event files; the built CLI they need.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startNatsServer, type NatsServer } from '../nats-server.js';
import { startRedisServer, type RedisServer } from '../redis-server.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const CLI = join(REPO, 'dist/cli/main.js');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Fails fast with a clear message when `npm run build` was not run. */
export function requireBuiltCli(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` before the backbone tests`);
}

export interface Backbone {
  nats: NatsServer;
  redis: RedisServer;
  /** A temporary folder for configs, event files and CSVs; removed by `stop()`. */
  dir: string;
  /** Writes `content` (an object → JSON, a string as is) to `dir/name`; returns the path. */
  writeFile(name: string, content: unknown): string;
  /** Writes JSON Lines (one object per line; a string is written as the raw line). */
  writeJsonl(name: string, lines: Array<object | string>): string;
  stop(): Promise<void>;
}

/** Starts a nats-server (JetStream) and a redis-server on free ports, and a temp folder. */
export async function startBackbone(): Promise<Backbone> {
  requireBuiltCli();
  const [nats, redis] = await Promise.all([startNatsServer(), startRedisServer()]);
  const dir = mkdtempSync(join(tmpdir(), 'hd-backbone-'));
  const writeFile = (name: string, content: unknown): string => {
    const path = join(dir, name);
    writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
    return path;
  };
  return {
    nats,
    redis,
    dir,
    writeFile,
    writeJsonl: (name, lines) =>
      writeFile(name, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n'),
    async stop() {
      await Promise.allSettled([nats.stop(), redis.stop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
