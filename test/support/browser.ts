/**
 * A real browser for the console's tests: Debian's `chromium` (scripts/servers.sh install puts
 * it there) driven by `playwright-core` (no browser download), headless. `CHROMIUM_BIN`
 * overrides the path.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

/** Launches headless chromium; fails with what to do when it is not installed. */
export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`chromium not found at ${CHROMIUM}: run scripts/servers.sh install (apt-get install chromium) or set CHROMIUM_BIN`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
}

/** The admin server's port from a `run --metrics-port 0` log line. */
export function adminPortFrom(stderr: string): number | undefined {
  const m = /"port":(\d+)[^\n]*"msg":"admin server listening"|"msg":"admin server listening"[^\n]*"port":(\d+)/.exec(stderr);
  return m ? Number(m[1] ?? m[2]) : undefined;
}
