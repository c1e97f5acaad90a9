// One group: its sessions as the deciding leader sees them, its decision history, and for
// administrators the actions (override, delete a session, delete the group), each confirmed.
import { ApiError, call, get } from './api.js';
import { announce, confirmAction, h, message } from './dom.js';
import { ago, duration, localTime, ROLES, timespanSeconds } from './format.js';

const POLL_MS = 2000; // heartbeat ages and ValidFor move every second; roles arrive by stream
const root_ = '/api/v1/clientfailover/groups';

export function groupPage(root, context, groupId) {
  const path = `${root_}/${encodeURIComponent(groupId)}`;
  const title = h('h1', { tabindex: '-1' }, `Group ${groupId}`);
  const facts = h('dl', { class: 'facts', id: 'group-facts' });
  const problem = h('div', { id: 'group-problem' });
  const outcome = h('div', { id: 'group-outcome' });
  const sessions = h('tbody');
  const history = h('ol', { class: 'timeline', id: 'group-history', reversed: true });
  const deleteGroup = h('button', { type: 'button', class: 'danger', id: 'delete-group', onclick: () => removeGroup() }, 'Delete group…');
  const adminNote = context.admin ? null : h('p', { class: 'note' }, 'Overrides and deletions need an administrators account.');
  root.append(...[
    h('p', {}, h('a', { href: '#/groups' }, '← All groups')),
    title, problem, outcome, facts,
    h('h2', {}, 'Sessions'), adminNote,
    h('div', { class: 'scroll' }, h('table', { class: 'grid', id: 'sessions' },
      h('caption', {}, `Client sessions of ${groupId}`),
      h('thead', {}, h('tr', {}, ['Session', 'Role', 'FailoverScore', 'Last heartbeat', 'ValidFor', 'Override', context.admin ? 'Actions' : null]
        .filter(Boolean).map((label) => h('th', { scope: 'col' }, label)))),
      sessions)),
    context.admin ? h('p', {}, deleteGroup) : null,
    h('h2', {}, 'Decision history'),
    h('p', { class: 'note' }, 'Newest first: every change of the Primary with the reason the leader recorded.'),
    history,
  ].filter(Boolean));
  let group = null;
  let lastSequence = null;
  let generation = 0;
  let gone = false;
  const poll = setInterval(() => load(), POLL_MS);

  async function load() {
    const mine = ++generation;
    try {
      const detail = await get(`/api/v1/dashboard/groups/${encodeURIComponent(groupId)}`);
      const events = await get(`${path}/events`, lastSequence === null ? {} : { after: lastSequence });
      if (mine !== generation || gone) return;
      showGroup(detail);
      addEvents(events);
      message(problem, '');
    } catch (error) {
      if (mine !== generation) return;
      if (error instanceof ApiError && error.status === 404) {
        gone = true;
        clearInterval(poll);
        message(problem, `Group ${groupId} does not exist (any more).`);
        return;
      }
      message(problem, error instanceof ApiError ? error.describe : String(error));
    }
  }

  function showGroup(detail) {
    const before = group;
    group = detail.Group;
    if (before && before.Primary !== group.Primary) {
      announce(`Group ${groupId}: Primary is now ${group.Primary ?? 'none'} (was ${before.Primary ?? 'none'}).`);
    }
    facts.replaceChildren(
      ...fact('Primary', group.Primary ?? 'none', 'fact-primary'),
      ...fact('PendingPrimary', group.PendingPrimary ?? '—', 'fact-pending'),
      ...fact('Epoch', String(group.Epoch)),
      ...fact('FailoverTimeout', group.FailoverTimeout),
      ...fact('Sessions', `${group.Sessions} (${group.LiveSessions} live)`),
      ...fact('Last data processed', localTime(group.LastDataProcessedTime)),
    );
    const focused = document.activeElement?.dataset?.action;
    const focusedRow = document.activeElement?.closest?.('tr')?.dataset.session;
    sessions.replaceChildren(...detail.Sessions.map(sessionRow));
    if (detail.Sessions.length === 0) {
      sessions.append(h('tr', {}, h('td', { colspan: context.admin ? 7 : 6 }, 'No sessions.')));
    }
    if (focused && focusedRow) {
      sessions.querySelector(`tr[data-session="${CSS.escape(focusedRow)}"] [data-action="${focused}"]`)?.focus();
    }
    deleteGroup.disabled = group.Sessions > 0;
    deleteGroup.title = group.Sessions > 0 ? 'Delete its sessions first: a group with sessions cannot be deleted.' : '';
  }

  function fact(name, value, id) {
    return [h('dt', {}, name), h('dd', id ? { id } : {}, value)];
  }

  function sessionRow(session) {
    const role = ROLES[session.Role];
    const override = session.RoleOverride === 1
      ? `Primary ${session.RoleOverrideExpirationTime ? `until ${localTime(session.RoleOverrideExpirationTime)}` : '(no expiry)'}`
      : '—';
    const heartbeat = session.HeartbeatAgeSeconds === null ? 'never'
      : `${ago(session.HeartbeatAgeSeconds)}${session.Live ? '' : ' (silent)'}`;
    return h('tr', { 'data-session': session.Id },
      h('th', { scope: 'row' }, session.Id, session.Name ? h('span', { class: 'sub' }, session.Name) : null),
      h('td', {}, h('span', { class: `role role-${role}` }, role)),
      h('td', { class: 'number' }, session.FailoverScore === null ? '—' : String(session.FailoverScore)),
      h('td', { class: session.Live ? null : 'warn' }, heartbeat),
      h('td', {}, duration(session.ValidFor)),
      h('td', {}, override),
      context.admin ? h('td', {}, h('div', { class: 'actions' }, actions(session))) : null);
  }

  function actions(session) {
    const overridden = session.RoleOverride === 1;
    return [
      overridden
        ? h('button', { type: 'button', 'data-action': 'clear', onclick: () => clearOverride(session) }, `Clear override of ${session.Id}…`)
        : h('button', { type: 'button', 'data-action': 'override', onclick: () => setOverride(session) }, `Make ${session.Id} Primary…`),
      h('button', { type: 'button', class: 'danger', 'data-action': 'delete', onclick: () => removeSession(session) }, `Delete ${session.Id}…`),
    ];
  }

  async function setOverride(session) {
    const input = h('input', { id: 'override-period', value: '01:00:00', pattern: '^(\\d+\\.)?\\d{1,2}:\\d\\d:\\d\\d$', 'aria-describedby': 'override-period-help' });
    const extra = h('div', { class: 'field' },
      h('label', { for: 'override-period' }, 'For how long (hh:mm:ss; empty: until cleared)'), input,
      h('p', { id: 'override-period-help', class: 'note' }, 'The override ends by itself after this time.'));
    const holder = group?.Primary && group.Primary !== session.Id ? group.Primary : null;
    const text = `${session.Id} becomes the Primary of ${groupId} whatever its FailoverScore, until the override ends. ` +
      (holder ? `${holder} holds the grant now: ${session.Id} is PendingPrimary until ${holder} is answered Secondary or its grant expires (at most the FailoverTimeout, ${group.FailoverTimeout}).` : '');
    if (!await confirmAction({ title: `Make ${session.Id} Primary?`, text, ok: `Make ${session.Id} Primary`, extra })) return;
    const period = input.value.trim();
    if (period && timespanSeconds(period) === null) {
      return message(outcome, `"${period}" is not a duration like 01:00:00.`);
    }
    await act(() => call('POST', `${path}/clientsessions/${encodeURIComponent(session.Id)}/roleoverride`, {
      body: period ? { Value: 'Primary', ExpirationPeriod: period } : { Value: 'Primary' },
    }), `Override set: ${session.Id} is to be the Primary of ${groupId}.`);
  }

  async function clearOverride(session) {
    const text = `The override of ${session.Id} ends now and the normal rules decide the Primary of ${groupId} again: ` +
      'the current Primary keeps the role while it heartbeats, and a silent one is replaced by the live session with the highest FailoverScore.';
    if (!await confirmAction({ title: `Clear the override of ${session.Id}?`, text, ok: 'Clear override' })) return;
    await act(() => call('POST', `${path}/clientsessions/${encodeURIComponent(session.Id)}/roleoverride`, { body: { Value: 'Off' } }),
      `Override of ${session.Id} cleared.`);
  }

  async function removeSession(session) {
    const primary = group?.Primary === session.Id;
    const text = `${session.Id} is unregistered from ${groupId}. ` +
      (primary ? 'It is the Primary: its grant is released at once and the next candidate becomes PendingPrimary. ' : '') +
      'An adapter that is still running gets 404 on its next heartbeat and registers again.';
    if (!await confirmAction({ title: `Delete session ${session.Id}?`, text, ok: `Delete ${session.Id}` })) return;
    await act(() => call('DELETE', `${path}/clientsessions/${encodeURIComponent(session.Id)}`), `Session ${session.Id} deleted.`);
  }

  async function removeGroup() {
    const text = `Group ${groupId}, its configuration and its decision history are deleted on every node. This cannot be undone.`;
    if (!await confirmAction({ title: `Delete group ${groupId}?`, text, ok: `Delete ${groupId}` })) return;
    if (await act(() => call('DELETE', path), `Group ${groupId} deleted.`)) window.location.hash = '#/groups';
  }

  async function act(request, done) {
    try {
      await request();
    } catch (error) {
      message(outcome, error instanceof ApiError ? `Refused — ${error.describe}` : String(error));
      return false;
    }
    message(outcome, done, 'ok');
    announce(done);
    load();
    return true;
  }

  function addEvents(events) {
    for (const event of events) {
      lastSequence = Math.max(lastSequence ?? 0, event.Sequence);
      history.prepend(eventItem(event));
    }
    if (history.childElementCount === 0) history.append(h('li', { class: 'empty' }, 'No decisions yet.'));
    else history.querySelector('.empty')?.remove();
  }

  function eventItem(event) {
    const change = `${event.OldPrimary ?? 'none'} → ${event.NewPrimary ?? 'none'}`;
    const scores = Object.entries(event.Scores ?? {}).map(([id, score]) => `${id} ${score}`).join(', ');
    return h('li', {},
      h('time', { datetime: event.Time }, localTime(event.Time)),
      h('span', { class: 'change' }, ` Epoch ${event.Epoch}: Primary ${change}`,
        event.PendingPrimary ? `, PendingPrimary ${event.PendingPrimary}` : ''),
      h('q', { class: 'reason' }, event.Reason),
      scores ? h('span', { class: 'sub' }, `FailoverScores: ${scores}`) : null);
  }

  load();
  return {
    refresh: () => load(),
    changed(ids) {
      if (ids === null || ids.includes(groupId)) load();
    },
    destroy() {
      clearInterval(poll);
      generation += 1;
    },
  };
}
