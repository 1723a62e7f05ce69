/**
 * `http-destination explain --config F --profile ID [--dataflow ID] [--json]` (SPEC §12):
 * answers "why did profile X (not) arrive?". It reads the profile's snapshot from the
 * configured store and, per dataflow, shows the verdict of the export rules for its last
 * update (the worker's own `decideExports`, see domain/explain.ts) and the exact request an
 * export would send now: the payload from the worker's payload builder, the URL and headers
 * from the sink's request builder, with secrets and sensitive header values masked.
 */
import { Option, type Command } from 'commander';
import type { UnsetVariable } from '../config/env.js';
import { SENSITIVE_HEADER, type AppConfig, type DestinationConfig } from '../config/load.js';
import { explainDataflow, lastUpdateOf, type DataflowVerdict, type LastUpdate } from '../domain/explain.js';
import { idempotencyKey } from '../domain/keys.js';
import { buildPayload, preparePayloadRules } from '../domain/payload.js';
import type { AppliedUpdate, ExportPayload, JsonValue, ProfileSnapshot } from '../domain/types.js';
import { HttpDestinationError, UsageError } from '../errors.js';
import { createRedactor, MASK, type Redactor } from '../observability/redact.js';
import { requestBuilder } from '../sinks/http/request.js';
import { openSnapshotStore } from '../worker/runtime.js';
import { loadConfig, unsetLabel } from './commands.js';

/** The `--json` output of `explain` (stable: fields are only ever added). */
export interface ExplainReport {
  profileId: string;
  found: boolean;
  /** The snapshot as stored, without `last`. */
  snapshot?: Omit<ProfileSnapshot, 'last'>;
  /** What the last applied update did; null when the snapshot does not record it. */
  last?: LastUpdate | null;
  dataflows?: Array<DataflowVerdict & { destinationId: string; request: ExplainedRequest }>;
}

/** The request an export would send now, secrets masked. */
export interface ExplainedRequest {
  method: 'POST';
  url: string;
  headers: Record<string, string>;
  body: ExportPayload;
}

/** The profile is not in the store: exit 1. */
export class ProfileNotFoundError extends HttpDestinationError {
  constructor(profileId: string) {
    super('ERR_PROFILE_NOT_FOUND', `profile ${profileId} is not in the store (no update of it was applied there)`);
  }
}

/** Adds `explain` to the program. */
export function registerExplain(program: Command): void {
  program
    .command('explain')
    .description("a profile's snapshot and, per dataflow, whether its last update exports (and why) and the request an export would send now")
    .addOption(new Option('-c, --config <file>', 'configuration file (YAML or JSON)').makeOptionMandatory())
    .requiredOption('--profile <id>', 'the profile')
    .option('--dataflow <id>', 'only this dataflow')
    .option('--json', 'one JSON object')
    .action(async (o: { config: string; profile: string; dataflow?: string; json?: boolean }) => {
      await explain(o);
    });
}

async function explain(o: { config: string; profile: string; dataflow?: string; json?: boolean }): Promise<void> {
  const config = loadConfig(o.config, ['store']);
  const flows = o.dataflow === undefined ? config.dataflows : config.dataflows.filter((f) => f.id === o.dataflow);
  if (flows.length === 0) throw new UsageError(`--dataflow: unknown dataflow "${o.dataflow}"`);
  if (config.store.kind === 'memory') {
    throw new UsageError('explain reads profiles from the store, and store.kind: memory keeps them only inside the running worker');
  }
  const store = await openSnapshotStore(config);
  let snapshot: ProfileSnapshot | null;
  try {
    snapshot = await store.get(o.profile);
  } finally {
    await store.close();
  }
  const write = (s: string): void => void process.stdout.write(`${s}\n`);
  if (!snapshot) {
    if (o.json) write(JSON.stringify({ profileId: o.profile, found: false } satisfies ExplainReport));
    throw new ProfileNotFoundError(o.profile);
  }
  const report = buildReport(config, snapshot, flows);
  write(o.json ? JSON.stringify(report) : formatReport(report, config.store.kind));
}

/** The report for one snapshot (no I/O). */
export function buildReport(config: AppConfig, snapshot: ProfileSnapshot, flows: AppConfig['dataflows'], now: number = Date.now()): ExplainReport {
  const redact = createRedactor(config.secrets);
  const { last, ...stored } = snapshot;
  const applied: AppliedUpdate = { update: { profileId: snapshot.profileId }, before: snapshot, after: snapshot };
  const dataflows = flows.map((flow) => {
    const verdict = explainDataflow(snapshot, flow);
    const dest = config.destinations.find((d) => d.id === flow.destinationId);
    if (!dest) throw new Error(`dataflow ${flow.id}: no destination ${flow.destinationId}`);
    // Memberships exited in the last update still show, as in the export it caused.
    const payload = buildPayload(applied, preparePayloadRules(flow, config.audiences), last?.exited ?? []);
    const key =
      last?.eventId !== undefined
        ? idempotencyKey({ dataflowId: flow.id, profileId: snapshot.profileId, event: `event:${last.eventId}` })
        : '(derived from the source message of the update: not recorded)';
    const req = requestBuilder(dest)({ dataflowId: flow.id, destinationId: dest.id, profileId: snapshot.profileId, idempotencyKey: key, payload }, now);
    const request: ExplainedRequest = {
      method: 'POST',
      url: showValue(req.url, redact, config.unsetEnv),
      headers: maskHeaders(req.headers, dest, redact, config.unsetEnv),
      body: maskStrings(payload, redact) as ExportPayload,
    };
    return { ...verdict, destinationId: dest.id, request };
  });
  return { profileId: snapshot.profileId, found: true, snapshot: stored, last: lastUpdateOf(snapshot) ?? null, dataflows };
}

/** A config value as shown: `${NAME} (unset)` for an unset variable, secrets masked. */
function showValue(v: string, redact: Redactor, unset: readonly UnsetVariable[] | undefined): string {
  let out = v;
  for (const u of unset ?? []) if (out.includes(u.placeholder)) out = out.split(u.placeholder).join(unsetLabel(u));
  return redact.text(out);
}

/** Sensitive headers' values masked (unless unset), auth headers as the sink adds them, secrets masked. */
function maskHeaders(headers: Record<string, string>, dest: DestinationConfig, redact: Redactor, unset: readonly UnsetVariable[] | undefined): Record<string, string> {
  const isUnset = (v: string): UnsetVariable | undefined => unset?.find((u) => u.placeholder === v);
  // Only the destination's own headers can be credentials: idempotency-key, webhook-* are ours.
  const custom = new Set(Object.keys(dest.headers).map((n) => n.toLowerCase()));
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const u = isUnset(value);
    out[name] = u ? unsetLabel(u) : custom.has(name) && SENSITIVE_HEADER.test(name) ? MASK : showValue(value, redact, unset);
  }
  const signingUnset = dest.signing?.secrets.map(isUnset).find((u) => u !== undefined);
  if (signingUnset && out['webhook-signature'] !== undefined) out['webhook-signature'] = `(not computed: signing secret ${unsetLabel(signingUnset)})`;
  const auth = dest.auth;
  if (auth.type === 'bearer') {
    const u = isUnset(auth.token);
    out.authorization = `Bearer ${u ? unsetLabel(u) : MASK}`;
  } else if (auth.type === 'oauth2-client-credentials' || auth.type === 'oauth2-password') {
    out.authorization = `Bearer ${MASK} (an access token from ${showValue(auth.accessTokenUrl, redact, unset)})`;
  }
  return out;
}

/** A copy with config secrets masked inside strings (the payload's keys and shape untouched). */
function maskStrings(v: JsonValue, redact: Redactor): JsonValue {
  if (typeof v === 'string') return redact.text(v);
  if (Array.isArray(v)) return v.map((x) => maskStrings(x, redact));
  if (v !== null && typeof v === 'object') {
    const out: Record<string, JsonValue> = {};
    for (const [k, x] of Object.entries(v)) out[k] = maskStrings(x, redact);
    return out;
  }
  return v;
}

const indent = (text: string, by: string): string =>
  text
    .split('\n')
    .map((l) => by + l)
    .join('\n');

/** The report for people. */
export function formatReport(r: ExplainReport, storeKind: string): string {
  const lines: string[] = [`profile ${r.profileId} (store: ${storeKind})`, ''];
  const last = r.last;
  if (last) {
    const list = (xs: string[]): string => (xs.length > 0 ? xs.join(', ') : '-');
    lines.push(`last update${last.eventId !== undefined ? ` ${last.eventId}` : ''}${last.at !== undefined ? ` at ${last.at}` : ''}:`);
    lines.push(`  wrote             ${list(last.written)}${last.writtenMore > 0 ? ` (+${last.writtenMore} more)` : ''}`);
    lines.push(`  identity map      ${last.identityChanged ? 'changed' : 'unchanged'}`);
    lines.push(`  entered           ${list(last.entered)}`);
    lines.push(`  exited            ${list(last.exited)}`);
  } else {
    lines.push('last update: not recorded in this snapshot');
  }
  lines.push('', 'snapshot:', indent(JSON.stringify(r.snapshot, null, 2), '  '));
  for (const f of r.dataflows ?? []) {
    lines.push('', `dataflow ${f.dataflowId} → destination ${f.destinationId}`);
    const head = f.verdict === 'export' ? `EXPORTS (${f.reasons.join(', ')})` : f.verdict === 'none' ? 'NO EXPORT' : 'UNKNOWN';
    lines.push(`  last update: ${head}`);
    for (const w of f.why) lines.push(`    - ${w}`);
    lines.push('  an export now would send:', `    POST ${f.request.url}`);
    for (const [k, v] of Object.entries(f.request.headers)) lines.push(`    ${k}: ${v}`);
    lines.push(indent(JSON.stringify(f.request.body, null, 2), '    '));
  }
  return lines.join('\n');
}
