/**
 * Custom uploads (SPEC §9): a CSV of profiles becomes one membership update event per row,
 * which then flows through the same path as any other update.
 *
 * CSV shape: a header row; a `profileId` column (required); every other column is an
 * identity namespace whose cell is an identity id (empty cells are skipped). Quoted fields
 * (RFC 4180) are understood. Fields are separated by `,`, or by `;` or a tab when the header
 * row uses that instead (spreadsheets in many locales write `;`), or by the delimiter given.
 *
 * ```csv
 * profileId,email_lc_sha256,ecid
 * p-1,6553…,1457…
 * ```
 */
import { createHash } from 'node:crypto';
import type { IdentityMap, ProfileUpdate } from '../domain/types.js';

export interface ImportResult {
  events: ProfileUpdate[];
  /** Rows that could not be imported, with their 1-based line numbers. */
  bad: Array<{ line: number; reason: string }>;
  /** The field delimiter used (given, or detected from the header row). */
  delimiter: string;
  /** Data rows read (good and bad), the header not counted. */
  rows: number;
}

/** Delimiters recognised in a header row, the default first. */
const DETECTED = [',', ';', '\t'] as const;

/**
 * The delimiter of a CSV: of `,`, `;` and tab, the one the header row (its first line,
 * quoted parts left out) holds most often; `,` when none or a tie with `,`.
 *
 * @example detectDelimiter('profileId;ecid\np-1;1\n') // ';'
 */
export function detectDelimiter(text: string): string {
  const nl = text.indexOf('\n');
  const header = (nl < 0 ? text : text.slice(0, nl)).replace(/"[^"]*"/g, '');
  let best: string = ',';
  let most = 0;
  for (const d of DETECTED) {
    const n = header.split(d).length - 1;
    if (n > most) {
      best = d;
      most = n;
    }
  }
  return best;
}

/** Splits CSV text into rows of fields, keeping each row's starting line number. */
export function parseCsv(text: string, delimiter = ','): Array<{ line: number; fields: string[] } | { line: number; error: string }> {
  const rows: Array<{ line: number; fields: string[] } | { line: number; error: string }> = [];
  let i = 0;
  let line = 1;
  const n = text.length;
  while (i < n) {
    const start = line;
    const fields: string[] = [];
    let field = '';
    let error: string | undefined;
    let endOfRow = false;
    while (!endOfRow) {
      if (i < n && text[i] === '"' && field === '') {
        i++;
        let closed = false;
        while (i < n) {
          const c = text[i];
          if (c === '"') {
            if (text[i + 1] === '"') {
              field += '"';
              i += 2;
              continue;
            }
            i++;
            closed = true;
            break;
          }
          if (c === '\n') line++;
          field += c;
          i++;
        }
        if (!closed) error = 'unterminated quoted field';
        else if (i < n && text[i] !== delimiter && text[i] !== '\n' && text[i] !== '\r') error = 'text after a closing quote';
      }
      while (i < n && text[i] !== delimiter && text[i] !== '\n') {
        if (!(text[i] === '\r' && text[i + 1] === '\n')) field += text[i];
        i++;
      }
      fields.push(field);
      field = '';
      if (i >= n) endOfRow = true;
      else if (text[i] === delimiter) i++;
      else {
        i++;
        line++;
        endOfRow = true;
      }
    }
    if (error) rows.push({ line: start, error });
    else if (!(fields.length === 1 && fields[0].trim() === '')) rows.push({ line: start, fields });
  }
  return rows;
}

/**
 * Turns a custom-upload CSV into membership events for `audienceId` (status `realized`).
 * Each event's `eventId` derives from the audience, the file's content and the row, so
 * importing the same file twice yields the same ids (the endpoint and JetStream dedupe).
 *
 * @example csvToEvents('profileId,ecid\np-1,123\n', { audienceId: 'aud-up' })
 *
 * @param options.delimiter the field delimiter. @default detected from the header row (`,`, `;` or tab)
 */
export function csvToEvents(text: string, options: { audienceId: string; now?: Date; delimiter?: string }): ImportResult {
  const now = (options.now ?? new Date()).toISOString();
  const digest = createHash('sha256').update(text).digest('hex').slice(0, 16);
  const delimiter = options.delimiter ?? detectDelimiter(text);
  const rows = parseCsv(text, delimiter);
  const bad: ImportResult['bad'] = [];
  const events: ProfileUpdate[] = [];
  const header = rows.shift();
  const none = (line: number, reason: string): ImportResult => ({ events, bad: [{ line, reason }], delimiter, rows: rows.length });
  if (!header) return none(1, 'empty file: a header row with a profileId column is required');
  if ('error' in header) return none(header.line, `header: ${header.error}`);
  const names = header.fields.map((f) => f.trim());
  const idCol = names.indexOf('profileId');
  if (idCol < 0) {
    const shown = delimiter === '\t' ? 'tab' : `"${delimiter}"`;
    return none(header.line, `header: no profileId column (fields split on ${shown}; use --delimiter for another one)`);
  }
  for (const row of rows) {
    if ('error' in row) {
      bad.push({ line: row.line, reason: row.error });
      continue;
    }
    if (row.fields.length !== names.length) {
      bad.push({ line: row.line, reason: `expected ${names.length} fields, found ${row.fields.length}` });
      continue;
    }
    const profileId = row.fields[idCol].trim();
    if (profileId === '') {
      bad.push({ line: row.line, reason: 'profileId is empty' });
      continue;
    }
    const identityMap: IdentityMap = {};
    names.forEach((ns, c) => {
      const id = row.fields[c].trim();
      if (c === idCol || ns === '' || id === '') return;
      (identityMap[ns] ??= []).push({ id });
    });
    const event: ProfileUpdate = {
      profileId,
      eventId: `upload:${options.audienceId}:${digest}:${row.line}`,
      timestamp: now,
      segmentMembership: { ups: { [options.audienceId]: { status: 'realized', lastQualificationTime: now } } },
    };
    if (Object.keys(identityMap).length > 0) event.identityMap = identityMap;
    events.push(event);
  }
  return { events, bad, delimiter, rows: rows.length };
}
