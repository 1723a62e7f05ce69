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
    typeof dest === 'number' ? pino.destination({ fd: dest, sync: true }) : dest,
  );
}
