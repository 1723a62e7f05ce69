// The Failed requests page: a paged list filtered by dataflow, status and time, with the last
// error and the attempts; replay of one, a selection, or all of a dataflow (actions: the admin
// token); and a profile's `explain` view.
import { ApiError, el, fmtInt, getJson, postAction, token } from './dom.js';

const PAGE = 25;
const RANGES = [
  ['', 'any time'],
  ['15m', 'last 15 min'],
  ['1h', 'last hour'],
  ['24h', 'last 24 h'],
  ['7d', 'last 7 days'],
];
const RANGE_MS = { '15m': 900_000, '1h': 3_600_000, '24h': 86_400_000, '7d': 604_800_000 };

const state = { dataflow: '', status: '', range: '', profile: '', offset: 0, selected: new Set(), message: null };

function query() {
  const q = new URLSearchParams({ offset: String(state.offset), limit: String(PAGE) });
  if (state.dataflow) q.set('dataflow', state.dataflow);
  if (state.status) q.set('status', state.status);
  if (state.profile) q.set('profile', state.profile);
  if (state.range) q.set('since', new Date(Date.now() - RANGE_MS[state.range]).toISOString());
  return q;
}

function describe(r) {
  return r.lastStatus !== undefined ? `HTTP ${r.lastStatus}` : r.lastErrorCode;
}

async function act(main, label, path) {
  state.message = { kind: 'info', text: `${label}…` };
  try {
    const r = await postAction(path);
    state.message = {
      kind: 'ok',
      status: 200,
      text: `${label}: replayed ${r.replayed} — delivered ${r.delivered}, failed again ${r.failed}, skipped ${r.skipped} (of ${r.selected} selected, ${r.stored} stored)`,
    };
    state.selected.clear();
  } catch (err) {
    const status = err instanceof ApiError ? err.status : 0;
    const refused = status === 401 || status === 403;
    state.message = { kind: 'error', status, text: `${label}: ${refused ? 'refused' : 'failed'} (${status || 'no answer'}): ${err.message}${refused && !token.get() ? ' — enter the admin token above' : ''}` };
  }
  await renderFailed(main);
}

function select(name, value, options, onchange) {
  return el(
    'select',
    { name, onchange },
    options.map(([v, label]) => el('option', { value: v, selected: v === value }, label)),
  );
}

/** Renders the list into `main`. */
export async function renderFailed(main) {
  const [settings, page] = await Promise.all([getJson('/api/console').catch(() => ({ dataflows: [] })), getJson(`/api/failed/search?${query()}`)]);
  const rerender = () => renderFailed(main).catch((err) => main.replaceChildren(el('p', { class: 'error' }, err.message)));
  const setFilter = (k) => (e) => {
    state[k] = e.target.value.trim();
    state.offset = 0;
    state.selected.clear();
    rerender();
  };
  const filters = el(
    'form',
    { class: 'filters', id: 'filters', onsubmit: (e) => e.preventDefault() },
    el('label', {}, 'dataflow ', select('dataflow', state.dataflow, [['', 'all'], ...settings.dataflows.map((d) => [d.id, d.id])], setFilter('dataflow'))),
    el('label', {}, 'status ', el('input', { name: 'status', value: state.status, placeholder: '400, 5xx, error, ERR_…', size: 16, onchange: setFilter('status') })),
    el('label', {}, 'time ', select('range', state.range, RANGES, setFilter('range'))),
    el('label', {}, 'profile ', el('input', { name: 'profile', value: state.profile, placeholder: 'profile id', size: 14, onchange: setFilter('profile') })),
    el('button', { type: 'button', onclick: rerender }, 'Refresh'),
  );
  const ids = page.items.map((r) => r.id);
  const allChecked = () => ids.length > 0 && ids.every((id) => state.selected.has(id));
  // A selection change updates the page in place (count, buttons, the page's box): no fetch, no re-render.
  let replaySelected;
  let pageBox;
  const boxes = new Map();
  const syncSelection = () => {
    const n = state.selected.size;
    replaySelected.textContent = `Replay selected (${n})`;
    replaySelected.disabled = n === 0;
    pageBox.checked = allChecked();
    for (const [id, box] of boxes) box.checked = state.selected.has(id);
  };
  const rowBox = (r) => {
    const box = el('input', { type: 'checkbox', 'aria-label': `select ${r.profileId}`, checked: state.selected.has(r.id), onchange: (e) => (e.target.checked ? state.selected.add(r.id) : state.selected.delete(r.id), syncSelection()) });
    boxes.set(r.id, box);
    return box;
  };
  const rows = page.items.map((r) =>
    el(
      'tr',
      { 'data-failed-id': r.id, 'data-profile': r.profileId, 'data-dataflow': r.dataflowId },
      el('td', {}, rowBox(r)),
      el('td', { class: 'nowrap' }, r.failedAt),
      el('td', {}, r.dataflowId),
      el('td', {}, el('a', { href: `#/explain?${new URLSearchParams({ profile: r.profileId, dataflow: r.dataflowId })}` }, r.profileId)),
      el('td', { 'data-status': r.lastStatus ?? r.lastErrorCode }, describe(r)),
      el('td', { class: 'num' }, String(r.attempts), r.replays ? el('span', { class: 'muted' }, ` (${r.replays} replays)`) : null),
      el('td', { class: 'error-text' }, r.lastError),
      el('td', {}, el('button', { type: 'button', 'data-replay-one': r.id, onclick: () => act(main, `replay ${r.profileId}`, `/api/failed/replay-selected?${new URLSearchParams([['id', r.id]])}`) }, 'Replay')),
    ),
  );
  replaySelected = el(
    'button',
    {
      type: 'button',
      id: 'replay-selected',
      disabled: state.selected.size === 0,
      onclick: () => {
        const selectedIds = [...state.selected];
        act(main, `replay ${selectedIds.length} selected`, `/api/failed/replay-selected?${new URLSearchParams(selectedIds.map((id) => ['id', id]))}`);
      },
    },
    `Replay selected (${state.selected.size})`,
  );
  const actions = el(
    'div',
    { class: 'actions' },
    replaySelected,
    el(
      'button',
      {
        type: 'button',
        id: 'replay-all',
        disabled: !state.dataflow,
        title: state.dataflow ? '' : 'choose a dataflow first',
        onclick: () => act(main, `replay all of ${state.dataflow}`, `/api/failed/replay?${new URLSearchParams({ dataflow: state.dataflow })}`),
      },
      state.dataflow ? `Replay all of ${state.dataflow}` : 'Replay all of a dataflow (choose one)',
    ),
    el('span', { class: 'muted' }, token.get() ? 'actions use the admin token of this tab' : 'actions need the admin token (top right)'),
  );
  const message = state.message ? el('p', { id: 'action-result', class: state.message.kind, 'data-status': state.message.status ?? '' }, state.message.text) : null;
  const last = Math.min(page.total, state.offset + page.items.length);
  const pager = el(
    'div',
    { class: 'pager' },
    el('button', { type: 'button', id: 'prev', disabled: state.offset === 0, onclick: () => ((state.offset = Math.max(0, state.offset - PAGE)), rerender()) }, '← newer'),
    el('span', { id: 'page-info', 'data-total': page.total }, page.total ? `${fmtInt(state.offset + 1)}–${fmtInt(last)} of ${fmtInt(page.total)}` : 'none'),
    el('button', { type: 'button', id: 'next', disabled: last >= page.total, onclick: () => ((state.offset += PAGE), rerender()) }, 'older →'),
  );
  main.replaceChildren(
    el(
      'div',
      { id: 'failed' },
      filters,
      actions,
      message,
      el(
        'table',
        { class: 'plain list' },
        el(
          'thead',
          {},
          el(
            'tr',
            {},
            el('th', {}, (pageBox = el('input', { type: 'checkbox', 'aria-label': 'select this page', checked: allChecked(), onchange: (e) => (ids.forEach((id) => (e.target.checked ? state.selected.add(id) : state.selected.delete(id))), syncSelection()) }))),
            ['failed at', 'dataflow', 'profile', 'status', 'attempts', 'last error', ''].map((h) => el('th', {}, h)),
          ),
        ),
        el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'No failed request matches.'))),
      ),
      pager,
    ),
  );
}

/** The `explain` view of one profile (`#/explain?profile=…&dataflow=…`). */
export async function renderExplain(main, params) {
  const profile = params.get('profile') ?? '';
  const q = new URLSearchParams({ profile });
  if (params.get('dataflow')) q.set('dataflow', params.get('dataflow'));
  const back = el('p', {}, el('a', { href: '#/failed' }, '← failed requests'));
  let r;
  try {
    r = await getJson(`/api/explain?${q}`);
  } catch (err) {
    main.replaceChildren(el('div', { id: 'explain' }, back, el('h2', {}, `Profile ${profile}`), el('p', { class: 'error', 'data-explain-error': err.status ?? '' }, err.message)));
    return;
  }
  const last = r.last;
  const list = (xs) => (xs && xs.length ? xs.join(', ') : '–');
  main.replaceChildren(
    el(
      'div',
      { id: 'explain', 'data-profile': r.profileId },
      back,
      el('h2', {}, `Profile ${r.profileId}`),
      last
        ? el(
            'table',
            { class: 'plain' },
            el('tbody', {}, [
              ['last update', `${last.eventId ?? ''}${last.at ? ` at ${last.at}` : ''}`],
              ['wrote', `${list(last.written)}${last.writtenMore ? ` (+${last.writtenMore} more)` : ''}`],
              ['identity map', last.identityChanged ? 'changed' : 'unchanged'],
              ['entered', list(last.entered)],
              ['exited', list(last.exited)],
            ].map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, v)))),
          )
        : el('p', { class: 'muted' }, 'The last update is not recorded in this snapshot.'),
      (r.dataflows ?? []).map((f) =>
        el(
          'section',
          { class: 'card', 'data-explain-flow': f.dataflowId, 'data-verdict': f.verdict },
          el('h3', {}, `${f.dataflowId} → ${f.destinationId}: `, el('span', { class: f.verdict === 'export' ? 'ok' : 'muted' }, f.verdict === 'export' ? `EXPORTS (${(f.reasons ?? []).join(', ')})` : f.verdict === 'none' ? 'NO EXPORT' : 'UNKNOWN')),
          el('ul', {}, (f.why ?? []).map((w) => el('li', {}, w))),
          el('p', {}, 'An export now would send:'),
          el('pre', { class: 'request' }, `${f.request.method} ${f.request.url}\n${Object.entries(f.request.headers).map(([k, v]) => `${k}: ${v}`).join('\n')}\n\n${JSON.stringify(f.request.body, null, 2)}`),
        ),
      ),
      el('h3', {}, 'Snapshot'),
      el('pre', { class: 'snapshot' }, JSON.stringify(r.snapshot, null, 2)),
    ),
  );
}
