// The landing page: one row per group, filtered, sorted and paged by the node (one request
// per page, however many groups there are), refreshed when the change stream names a change.
import { ApiError, get } from './api.js';
import { announce, h, message } from './dom.js';
import { localTime } from './format.js';

const COLUMNS = [
  { key: 'Id', label: 'Group', sort: 'Id' },
  { key: 'Primary', label: 'Primary', sort: 'Primary' },
  { key: 'PendingPrimary', label: 'PendingPrimary', sort: 'PendingPrimary' },
  { key: 'Sessions', label: 'Sessions (live)', sort: 'Sessions' },
  { key: 'Epoch', label: 'Epoch', sort: 'Epoch' },
  { key: 'LastDataProcessedTime', label: 'Last data processed', sort: null },
  { key: 'LastDecisionTime', label: 'Last decision', sort: 'LastDecisionTime' },
];
const PAGE_SIZES = [25, 100, 250, 1000];
const POLL_MS = 5000; // liveness (not replicated, so not streamed) is refreshed this often
const MIN_REFRESH_MS = 250;

// Kept across visits: coming back from a group shows the same page.
const state = { filter: '', sort: 'Id', order: 'asc', skip: 0, count: 100, withoutPrimary: false };

export function groupsPage(root, context) {
  const summary = h('p', { id: 'groups-summary', role: 'status' });
  const problem = h('div');
  const body = h('tbody');
  const table = h('table', { class: 'grid', id: 'groups' },
    h('caption', {}, 'Failover groups, their Primary and their last decision'),
    h('thead', {}, h('tr', {}, COLUMNS.map((column) => header(column)))),
    body);
  const previous = h('button', { type: 'button', onclick: () => move(-1) }, 'Previous page');
  const next = h('button', { type: 'button', onclick: () => move(1) }, 'Next page');
  root.append(
    h('h1', { tabindex: '-1' }, 'Groups'),
    controls(),
    summary,
    problem,
    h('div', { class: 'scroll' }, table),
    h('div', { class: 'pager' }, previous, next),
  );
  let rows = new Map(); // group id -> last row shown (to announce Primary changes)
  let visible = new Set();
  let total = null;
  let generation = 0;
  let timer = null;
  let lastFetch = 0;
  let pending = null;
  const poll = setInterval(() => refresh(), POLL_MS);

  function header(column) {
    if (column.sort === null) return h('th', { scope: 'col' }, column.label);
    const active = state.sort === column.sort;
    const direction = active ? (state.order === 'asc' ? 'ascending' : 'descending') : null;
    const button = h('button', {
      type: 'button',
      class: 'sort',
      onclick: () => {
        state.order = active && state.order === 'asc' ? 'desc' : 'asc';
        state.sort = column.sort;
        state.skip = 0;
        rebuildHeader();
        refresh(true);
      },
    }, column.label, h('span', { class: 'arrow', 'aria-hidden': 'true' }, active ? (state.order === 'asc' ? ' ▲' : ' ▼') : ''));
    return h('th', { scope: 'col', 'aria-sort': direction }, button);
  }

  function rebuildHeader() {
    const focused = document.activeElement?.textContent;
    const row = table.tHead.rows[0];
    row.replaceChildren(...COLUMNS.map((column) => header(column)));
    for (const button of row.querySelectorAll('button')) {
      if (button.textContent === focused) button.focus();
    }
  }

  function controls() {
    let debounce = null;
    const filter = h('input', {
      id: 'groups-filter', type: 'search', value: state.filter, autocomplete: 'off',
      oninput: () => {
        clearTimeout(debounce);
        debounce = setTimeout(() => { state.filter = filter.value; state.skip = 0; refresh(true); }, 250);
      },
    });
    const orphan = h('input', {
      id: 'groups-without-primary', type: 'checkbox', checked: state.withoutPrimary,
      onchange: () => { state.withoutPrimary = orphan.checked; state.skip = 0; refresh(true); },
    });
    const size = h('select', {
      id: 'groups-page-size',
      onchange: () => { state.count = Number(size.value); state.skip = 0; refresh(true); },
    }, PAGE_SIZES.map((n) => h('option', { value: n, selected: n === state.count }, String(n))));
    return h('div', { class: 'controls' },
      h('div', { class: 'field' }, h('label', { for: 'groups-filter' }, 'Filter (group, name, Primary or PendingPrimary)'), filter),
      h('div', { class: 'field inline' }, orphan, h('label', { for: 'groups-without-primary' }, 'Only groups without a Primary')),
      h('div', { class: 'field' }, h('label', { for: 'groups-page-size' }, 'Groups per page'), size));
  }

  function move(direction) {
    state.skip = Math.max(0, state.skip + direction * state.count);
    refresh(true);
  }

  // At most one request in flight and a few per second, however fast changes arrive.
  function refresh(now = false) {
    const wait = now ? 0 : Math.max(0, lastFetch + MIN_REFRESH_MS - Date.now());
    if (timer !== null) {
      if (!now) return;
      clearTimeout(timer);
    }
    timer = setTimeout(load, wait);
  }

  async function load() {
    timer = null;
    lastFetch = Date.now();
    const mine = ++generation;
    pending?.abort();
    pending = new AbortController();
    try {
      const page = await get('/api/v1/dashboard/groups', {
        skip: state.skip, count: state.count, filter: state.filter, sort: state.sort,
        order: state.order, withoutPrimary: state.withoutPrimary ? 'true' : '',
      }, pending.signal);
      if (mine !== generation) return;
      if (page.Groups.length === 0 && state.skip > 0 && page.Matched > 0) {
        state.skip = Math.max(0, page.Matched - state.count);
        return refresh(true);
      }
      show(page);
      message(problem, '');
    } catch (error) {
      if (error.name === 'AbortError' || mine !== generation) return;
      message(problem, error instanceof ApiError ? error.describe : String(error));
    }
  }

  function show(page) {
    total = page.Total;
    const first = page.Groups.length ? page.Skip + 1 : 0;
    const last = page.Skip + page.Groups.length;
    summary.textContent = `Groups ${first}–${last} of ${page.Matched}` +
      (page.Matched !== page.Total ? ` matching (${page.Total} in all)` : '');
    previous.disabled = page.Skip === 0;
    next.disabled = last >= page.Matched;
    for (const group of page.Groups) {
      const before = rows.get(group.Id);
      if (before && before.Primary !== group.Primary) {
        announce(`Group ${group.Id}: Primary is now ${group.Primary ?? 'none'} (was ${before.Primary ?? 'none'}).`);
      }
    }
    rows = new Map(page.Groups.map((group) => [group.Id, group]));
    visible = new Set(rows.keys());
    const focusedGroup = document.activeElement?.closest?.('tr')?.dataset.group;
    body.replaceChildren(...page.Groups.map(row));
    if (focusedGroup) body.querySelector(`tr[data-group="${CSS.escape(focusedGroup)}"] a`)?.focus();
    if (page.Groups.length === 0) {
      body.append(h('tr', {}, h('td', { colspan: COLUMNS.length }, page.Total ? 'No group matches.' : 'No groups yet.')));
    }
  }

  function row(group) {
    const live = `${group.Sessions} (${group.LiveSessions} live)`;
    return h('tr', { 'data-group': group.Id },
      h('th', { scope: 'row' }, h('a', { href: `#/group/${encodeURIComponent(group.Id)}` }, group.Id),
        group.Name ? h('span', { class: 'sub' }, group.Name) : null),
      h('td', { 'data-column': 'Primary' },
        group.Primary ? h('span', { class: 'name' }, group.Primary) : h('span', { class: 'name none' }, 'none'),
        group.Override ? h('span', { class: 'sub' }, `override: ${group.Override}`) : null),
      h('td', { 'data-column': 'PendingPrimary' }, group.PendingPrimary ?? '—'),
      h('td', { class: group.LiveSessions < group.Sessions ? 'warn' : null }, live),
      h('td', { class: 'number' }, String(group.Epoch)),
      h('td', {}, localTime(group.LastDataProcessedTime)),
      h('td', {}, localTime(group.LastDecisionTime),
        group.LastDecisionReason ? h('span', { class: 'sub' }, group.LastDecisionReason) : null));
  }

  refresh(true);
  return {
    refresh: () => refresh(true),
    changed(ids, newTotal) {
      // In Id order without a filter only the visible groups and the count matter; sorted by
      // anything else, a change anywhere may move a group onto this page.
      const plain = state.sort === 'Id' && !state.filter && !state.withoutPrimary;
      if (ids === null || newTotal !== total || !plain || ids.some((id) => visible.has(id))) refresh();
    },
    destroy() {
      clearInterval(poll);
      clearTimeout(timer);
      generation += 1;
      pending?.abort();
    },
  };
}
