// The cluster: members, leader, indexes, readiness and certificate of the answering node;
// the replicated log level and health endpoints (configuration API, administrators).
import { ApiError, call, get } from './api.js';
import { announce, h, message } from './dom.js';

const POLL_MS = 2000;
const LEVELS = ['Verbose', 'Debug', 'Information', 'Warning', 'Error', 'Fatal'];

export function clusterPage(root, context) {
  const problem = h('div');
  const facts = h('dl', { class: 'facts', id: 'cluster-facts' });
  const members = h('tbody');
  const configuration = h('div', { id: 'configuration' });
  root.append(
    h('h1', { tabindex: '-1' }, 'Cluster'),
    problem, facts,
    h('h2', {}, 'Members'),
    h('div', { class: 'scroll' }, h('table', { class: 'grid', id: 'members' },
      h('caption', {}, 'Raft members (match index and lag as the leader reports them)'),
      h('thead', {}, h('tr', {}, ['Member', 'Role', 'API', 'Raft', 'Reachable', 'Match index', 'Lag', 'Last contact']
        .map((label) => h('th', { scope: 'col' }, label)))),
      members)),
    h('h2', {}, 'Configuration'),
    configuration,
  );
  let generation = 0;
  const poll = setInterval(() => load(), POLL_MS);

  async function load() {
    const mine = ++generation;
    try {
      const view = await get('/api/v1/cluster');
      if (mine === generation) show(view);
      message(problem, '');
    } catch (error) {
      if (mine === generation) message(problem, error instanceof ApiError ? error.describe : String(error));
    }
  }

  function show(view) {
    const tls = view.Tls ?? { Enabled: false };
    const lag = view.CommitIndex !== null && view.AppliedIndex !== null ? view.CommitIndex - view.AppliedIndex : null;
    facts.replaceChildren(
      ...fact('Answering node', `${view.NodeId} (version ${view.Version})`),
      ...fact('Leader', view.Leader ?? 'none', 'cluster-leader'),
      ...fact('Term', String(view.Term ?? '—')),
      ...fact('Commit index', String(view.CommitIndex ?? '—')),
      ...fact('Applied index', `${view.AppliedIndex ?? '—'}${lag === null ? '' : ` (${lag} behind)`}`),
      ...fact('Quorum', view.HasQuorum ? 'yes' : 'no'),
      ...fact('Ready', `${view.Ready ? 'yes' : 'no'}: ${view.ReadyReason}`, 'cluster-ready'),
      ...fact('TLS certificate', certificate(tls)),
    );
    members.replaceChildren(...view.Members.map((member) => h('tr', {},
      h('th', { scope: 'row' }, member.Id ?? '(not published yet)', member.Self ? h('span', { class: 'sub' }, 'answering') : null),
      h('td', {}, member.Role),
      h('td', {}, member.ApiUrl ?? '—'),
      h('td', {}, member.Raft),
      h('td', { class: member.Reachable ? null : 'warn' }, member.Reachable ? 'yes' : 'no'),
      h('td', { class: 'number' }, String(member.MatchIndex ?? '—')),
      h('td', { class: 'number' }, String(member.Lag ?? '—')),
      h('td', {}, member.LastContactSeconds === null || member.LastContactSeconds === undefined ? '—' : `${Number(member.LastContactSeconds).toFixed(1)} s ago`))));
  }

  function certificate(tls) {
    if (!tls.Enabled) return 'none (plain HTTP)';
    if (tls.Error) return `${tls.Certificate}: cannot be read (${tls.Error})`;
    const warning = tls.Warning ? ` — ${tls.Warning}` : '';
    return `expires ${tls.NotAfter} (${tls.DaysLeft} days)${warning}`;
  }

  function fact(name, value, id) {
    return [h('dt', {}, name), h('dd', id ? { id } : {}, value)];
  }

  async function loadConfiguration() {
    if (!context.admin) {
      configuration.replaceChildren(h('p', { class: 'note' },
        'The log level and the health endpoints are shown to administrators: the configuration API needs that role.'));
      return;
    }
    try {
      showConfiguration(await get('/api/v1/configuration'));
    } catch (error) {
      message(configuration, error instanceof ApiError ? error.describe : String(error));
    }
  }

  function showConfiguration(config) {
    const select = h('select', { id: 'log-level' },
      LEVELS.map((level) => h('option', { value: level, selected: level === config.Logging.LogLevel }, level)));
    const outcome = h('div', { id: 'log-level-outcome' });
    const form = h('form', {
      class: 'controls',
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const answer = await call('PUT', '/api/v1/configuration/logging', { body: { LogLevel: select.value } });
          message(outcome, `Log level of every node set to ${answer.LogLevel}.`, 'ok');
          announce(`Log level set to ${answer.LogLevel}.`);
        } catch (error) {
          message(outcome, error instanceof ApiError ? `Refused — ${error.describe}` : String(error));
        }
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'log-level' }, 'Log level (replicated to every node)'), select),
    h('button', { type: 'submit' }, 'Apply'));
    const endpoints = config.HealthEndpoints;
    configuration.replaceChildren(
      h('p', {}, `This node logs at ${config.Logging.EffectiveLogLevel}.`),
      form, outcome,
      h('h3', {}, 'Health endpoints (OMF)'),
      endpoints.length === 0 ? h('p', {}, 'None configured.') : h('div', { class: 'scroll' }, h('table', { class: 'grid', id: 'health-endpoints' },
        h('caption', {}, 'Where the cluster sends its health data (secrets are never shown)'),
        h('thead', {}, h('tr', {}, ['Id', 'Endpoint', 'User name', 'Password', 'Client id', 'Client secret', 'Validates certificate']
          .map((label) => h('th', { scope: 'col' }, label)))),
        h('tbody', {}, endpoints.map((e) => h('tr', {},
          h('th', { scope: 'row' }, e.Id), h('td', {}, e.Endpoint), h('td', {}, e.UserName ?? '—'),
          h('td', {}, e.Password ?? '—'), h('td', {}, e.ClientId ?? '—'), h('td', {}, e.ClientSecret ?? '—'),
          h('td', {}, e.ValidateEndpointCertificate ? 'yes' : 'no')))))),
    );
  }

  load();
  loadConfiguration();
  return {
    refresh: () => load(),
    changed() {},
    destroy() {
      clearInterval(poll);
      generation += 1;
    },
  };
}
