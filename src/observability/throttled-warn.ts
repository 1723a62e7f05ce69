/**
 * `throttledWarn`: one warning per burst of the same trouble, not one per message.
 */

/** The least a throttled warning needs of a logger (pino's `Logger` fits). */
export interface WarnLogger {
  warn(obj: object, msg: string): void;
}

export interface ThrottledWarnOptions {
  /** Where the warnings go; none: they are only counted. */
  logger?: WarnLogger;
  /** At most one warning per this many ms. @default 5_000 */
  intervalMs?: number;
  /** Clock, ms. @default Date.now */
  now?: () => number;
  /**
   * The field of each warning that counts the occurrences since the previous warning,
   * this one included. @default 'occurrences'
   */
  countAs?: string;
}

/**
 * Returns `warn(obj, msg)`: logs at most once per `intervalMs`; the ones swallowed in between
 * are counted, and the next warning that goes out carries `[countAs]: <count>` (itself included).
 *
 * @example
 * const warnStore = throttledWarn({ logger, intervalMs: 5_000 });
 * warnStore({ err }, 'snapshot store step failed; retrying');
 */
export function throttledWarn(options: ThrottledWarnOptions = {}): (obj: object, msg: string) => void {
  const { logger } = options;
  const intervalMs = options.intervalMs ?? 5_000;
  const now = options.now ?? Date.now;
  let last = Number.NEGATIVE_INFINITY;
  const countAs = options.countAs ?? 'occurrences';
  let count = 0;
  return (obj, msg) => {
    count++;
    const at = now();
    if (at - last < intervalMs) return;
    last = at;
    const occurrences = count;
    count = 0;
    logger?.warn({ ...obj, [countAs]: occurrences }, msg);
  };
}
