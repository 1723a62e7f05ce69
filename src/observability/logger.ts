/**
 * The logger: pino, JSON lines on stderr, with every secret masked before it is written —
 * the config's and every secret registered in the process since (OAuth2 tokens obtained at
 * run time), in every encoding (see redact.ts), at every level (trace included): in the
 * message, the logged object, errors and child-logger bindings.
 * Normal operation logs nothing per message; one child logger per dataflow.
 */
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { createRedactor, type Redactor, type SecretRegistry } from './redact.js';

export type { Logger };

export interface LoggerOptions {
  level?: LevelWithSilent;
  /** Secret values to mask (AppConfig.secrets); added to the process's secrets, all of which are masked. */
  secrets?: readonly string[];
  /** Where secrets are kept. @default processSecrets */
  registry?: SecretRegistry;
  /** Where to write. @default process.stderr (fd 2) */
  destination?: NodeJS.WritableStream | number;
}

/**
 * Creates the process logger.
 *
 * @example const log = createLogger({ level: 'info', secrets: config.secrets });
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const redactor: Redactor = createRedactor(options.secrets ?? [], { registry: options.registry });
  const dest = options.destination ?? 2;
  const out = typeof dest === 'number' ? pino.destination({ fd: dest, sync: true }) : dest;
  // The last line of defence: every line is masked as written, so what the hooks below cannot
  // reach (child-logger bindings, serialised once when the child is made, before a runtime
  // token may exist) is masked too.
  const stream = { write: (line: string): boolean => out.write(maskLine(line, redactor)) };
  return pino(
    {
      level: options.level ?? 'info',
      base: { name: 'http-destination' },
      formatters: {
        log: (obj) => redactor.value(obj),
        bindings: (bindings) => redactor.value(bindings),
      },
      hooks: {
        logMethod(args, method) {
          const masked = args.map((a) => (typeof a === 'string' ? redactor.text(a) : a)) as typeof args;
          return method.apply(this, masked);
        },
      },
      serializers: {
        err: (e: unknown) => redactor.value(e),
      },
    },
    stream,
  );
}

/**
 * One written log line (pino: one JSON object and `\n`), masked. Masking keeps the JSON valid
 * in practice (a secret's JSON-escaped form is replaced whole); when it would not, the line is
 * replaced by a notice carrying only its level and time.
 */
function maskLine(line: string, redactor: Redactor): string {
  const masked = redactor.text(line);
  if (masked === line) return line;
  try {
    JSON.parse(masked);
    return masked;
  } catch {
    const level = /"level":(\d+)/.exec(line)?.[1] ?? '40';
    const time = /"time":(\d+)/.exec(line)?.[1] ?? String(Date.now());
    return `{"level":${level},"time":${time},"name":"http-destination","msg":"log line withheld: it held a secret that could not be masked in place"}\n`;
  }
}
