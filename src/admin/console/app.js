// The console's entry: a hash router (#/dataflows, #/failed, #/explain?profile=…), the admin
// token box, and the refresh of the Dataflows page every 2 s.
import { renderDataflows } from './dataflows.js';
import { renderExplain, renderFailed } from './failed.js';
import { el, token } from './dom.js';

const REFRESH_MS = 2_000;
const main = document.getElementById('main');
let timer;
let generation = 0;

function showTokenState() {
  document.getElementById('token-state').textContent = token.get() ? 'set for this tab' : 'not set';
}

async function route() {
  clearTimeout(timer);
  const mine = ++generation;
  const hash = location.hash.replace(/^#\/?/, '') || 'dataflows';
  const [name, qs] = hash.split('?');
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === (name === 'explain' ? 'failed' : name));
  document.body.dataset.page = name;
  try {
    if (name === 'failed') await renderFailed(main);
    else if (name === 'explain') await renderExplain(main, new URLSearchParams(qs ?? ''));
    else await renderDataflows(main);
    if (mine !== generation) return;
    document.body.dataset.ready = name;
    document.getElementById('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (mine !== generation) return;
    main.replaceChildren(el('p', { class: 'error' }, `Cannot read the admin API: ${err.message}`));
  }
  if (name === 'dataflows' && mine === generation) timer = setTimeout(route, REFRESH_MS);
}

document.getElementById('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = document.getElementById('token');
  token.set(input.value.trim());
  input.value = '';
  showTokenState();
});
document.getElementById('token-forget').addEventListener('click', () => {
  token.set('');
  showTokenState();
});
window.addEventListener('hashchange', route);
showTokenState();
route();
