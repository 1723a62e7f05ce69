#!/usr/bin/env node
/**
 * The `http-destination` command (SPEC §12). Exit codes: 0 success; 2 bad usage or bad
 * config (the message names the field); 1 anything else.
 */
import { Command, CommanderError, Option } from 'commander';
import { readFileSync } from 'node:fs';
import { ConfigError, ConfigErrors, HttpDestinationError, UsageError } from '../errors.js';
import { createRedactor } from '../observability/redact.js';
import { commands } from './commands.js';
import { registerPoolResetState } from './pool-reset-state.js';
import { registerExplain } from './explain.js';
import { registerStatus } from './status.js';

function version(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return '0.0.0';
  }
}

export function buildProgram(): Command {
  const program = new Command('http-destination')
    .description('Streaming HTTP API destination: profile updates in, per-dataflow JSON exports out.')
    .version(version())
    .showHelpAfterError()
    .exitOverride();

  const config = (): Option => new Option('-c, --config <file>', 'configuration file (YAML or JSON)').makeOptionMandatory();

  program
    .command('run')
    .description('run the worker until SIGINT/SIGTERM, then drain in-flight exports and stop')
    .addOption(config())
    .option('--once', 'process the source to its current end, wait for every export, print a summary, exit')
    .option('--json', 'with --once: print the summary as JSON')
    .option('--metrics-port <port>', 'serve the admin server (/metrics, /healthz, /readyz, /api/) on this port', (v) => parsePort(v))
    .option('--metrics-host <host>', 'bind the admin server to this host (default 127.0.0.1; any other needs admin.token)')
    .action(async (o: { config: string; once?: boolean; json?: boolean; metricsPort?: number; metricsHost?: string }) => {
      await commands.run(o);
    });

  const failed = program.command('failed').description('stored failed requests');
  failed
    .command('list')
    .description('list stored failed requests (no secrets in them)')
    .addOption(config())
    .option('--dataflow <id>', 'only this dataflow')
    .option('--json', 'one JSON object per line')
    .action(async (o: { config: string; dataflow?: string; json?: boolean }) => {
      await commands.failedList(o);
    });
  failed
    .command('replay')
    .description("send stored failed requests again with the destination's current settings")
    .addOption(config())
    .option('--dataflow <id>', 'only this dataflow')
    .option('--limit <n>', 'replay at most N records (the oldest first)', (v) => parseCount(v, '--limit', 0))
    .option('--since <time>', 'only records that last failed since TIME: ISO (2026-11-26T10:00:00Z) or ago (90s, 30m, 1h, 2d)')
    .option('--concurrency <n>', "profiles replayed at once (one profile's records always go one at a time, in order)", (v) => parseCount(v, '--concurrency', 1))
    .option('--progress', 'report progress on stderr every 2 s (the default when stderr is a terminal)')
    .option('--queue', "pool (store.kind: redis): hand the records to the dataflows' retry queues; the owner of each profile's partition sends them")
    .action(async (o: { config: string; dataflow?: string; limit?: number; since?: string; concurrency?: number; progress?: boolean; queue?: boolean }) => {
      await commands.failedReplay(o);
    });

  program
    .command('rejected')
    .description('rejected input events')
    .command('list')
    .description('list rejected input events with their reasons')
    .addOption(config())
    .option('--json', 'one JSON object per line')
    .action(async (o: { config: string; json?: boolean }) => {
      await commands.rejectedList(o);
    });

  program
    .command('validate')
    .description('check a config and print what it would run (secrets masked)')
    .addOption(config())
    .action(async (o: { config: string }) => {
      await commands.validate(o);
    });

  program
    .command('publish')
    .description('publish update events (JSON Lines) to the configured JetStream subject')
    .addOption(config())
    .argument('<events>', 'JSON Lines file of update events')
    .option('--progress', 'report progress on stderr every 2 s (the default when stderr is a terminal)')
    .action(async (events: string, o: { config: string; progress?: boolean }) => {
      await commands.publish({ ...o, events });
    });

  const pool = program.command('pool').description('the worker pool (JetStream + Redis)');
  pool
    .command('status')
    .description('workers, partition owners and the lag of each partition')
    .addOption(config())
    .option('--json', 'one JSON object')
    .action(async (o: { config: string; json?: boolean }) => {
      await commands.poolStatus(o);
    });
  pool
    .command('reset-partitions')
    .description("forget the pool's partition count (every worker stopped) before changing source.partitions")
    .addOption(config())
    .action(async (o: { config: string }) => {
      await commands.poolResetPartitions(o);
    });
  registerPoolResetState(pool);

  program
    .command('audiences')
    .description('audience operations')
    .command('import')
    .description('custom upload: make every profile of the CSV a member of the audience')
    .addOption(config())
    .requiredOption('--audience <id>', 'the audience (origin: upload) to import into')
    .argument('<csv>', 'CSV file: a profileId column, optional identity columns')
    .option('--delimiter <char>', 'field delimiter: one character, or "tab" (default: , or the ; or tab the header row uses)', parseDelimiter)
    .option('--progress', 'report progress on stderr every 2 s (the default when stderr is a terminal)')
    .action(async (csv: string, o: { config: string; audience: string; delimiter?: string; progress?: boolean }) => {
      await commands.audiencesImport({ ...o, csv });
    });

  registerExplain(program);

  registerStatus(program);
  return program;
}

function parseCount(v: string, flag: string, min: number): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min) throw new UsageError(`${flag}: must be a whole number ≥ ${min}: ${v}`);
  return n;
}

function parseDelimiter(v: string): string {
  const d = v === 'tab' || v === '\\t' ? '\t' : v;
  if (d.length !== 1 || d === '"' || d === '\n' || d === '\r') throw new UsageError(`--delimiter: one character other than a quote or a line break, or "tab": ${JSON.stringify(v)}`);
  return d;
}

function parsePort(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new UsageError(`--metrics-port: not a port: ${v}`);
  return n;
}

/** Runs the command line; resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) return 0;
      return 2;
    }
    if (err instanceof ConfigErrors || err instanceof ConfigError) {
      process.stderr.write(`config error:\n${indent(err.message)}\n`);
      return 2;
    }
    if (err instanceof UsageError) {
      process.stderr.write(`error: ${err.message}\n`);
      return 2;
    }
    // Secrets are masked by every module already; mask once more with what we know.
    const message = err instanceof Error ? err.message : String(err);
    const code = err instanceof HttpDestinationError ? ` (${err.code})` : '';
    process.stderr.write(`error${code}: ${createRedactor(commands.knownSecrets()).text(message)}\n`);
    return 1;
  }
}

function indent(s: string): string {
  return s
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n');
}

// `http-destination failed list | head`: a closed pipe ends the output, not the process with a trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

main(process.argv).then(
  (code) => {
    process.exitCode = code;
    // A failed command exits even if a connection it opened is still closing (a supervisor
    // must see the exit); an unref'd timer, so a clean run exits as soon as it is done.
    if (code !== 0) setTimeout(() => process.exit(code), 5_000).unref();
  },
  (err: unknown) => {
    process.stderr.write(`fatal: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
