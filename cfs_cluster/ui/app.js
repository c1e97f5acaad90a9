// The dashboard's shell: login and logout, the page router (#/groups, #/group/<id>,
// #/cluster), and one change stream shared by every page.
import { ApiError, follow, forgetCredentials, get, setCredentials } from './api.js';
import { clusterPage } from './cluster.js';
import { h } from './dom.js';
import { groupPage } from './group.js';
import { groupsPage } from './groups.js';

const session = { me: null, stream: null, page: null };
const $ = (id) => document.getElementById(id);

function start() {
  $('login-form').addEventListener('submit', onLogin);
  $('logout').addEventListener('click', logout);
  window.addEventListener('hashchange', route);
  $('login-submit').disabled = false;
  // An open cluster (no account yet) needs no login; anything else shows the form.
  get('/api/v1/dashboard/me').then(
    (me) => (me.Authentication ? showLogin('') : enter(me)),
    (error) => showLogin(error.message),
  );
}

async function onLogin(event) {
  event.preventDefault();
  const user = $('login-user').value;
  const password = $('login-password').value;
  $('login-submit').disabled = true;
  setCredentials(user, password);
  try {
    enter(await get('/api/v1/dashboard/me'));
  } catch (error) {
    forgetCredentials();
    const text = error instanceof ApiError && error.status === 401
      ? 'The user name or password is wrong.'
      : error.message;
    showLogin(text);
  } finally {
    $('login-submit').disabled = false;
    $('login-password').value = '';
  }
}

function showLogin(error) {
  stopPage();
  session.me = null;
  $('nav').hidden = true;
  $('who').hidden = true;
  $('view').replaceChildren();
  $('login').hidden = false;
  $('login-error').textContent = error;
  $('login-user').focus();
}

function enter(me) {
  session.me = me;
  $('login').hidden = true;
  $('nav').hidden = false;
  $('who').hidden = !me.Authentication;
  $('who-name').textContent = me.Authentication ? `${me.Name} (${me.Role})` : '';
  startStream();
  route();
}

function logout() {
  stopStream();
  forgetCredentials();
  window.location.hash = '#/groups';
  showLogin('');
  $('login-user').value = '';
}

// ------------------------------------------------------------------ change stream

function startStream() {
  stopStream();
  const controller = new AbortController();
  session.stream = controller;
  (async () => {
    while (!controller.signal.aborted) {
      try {
        await follow('/api/v1/dashboard/events', onChange, controller.signal);
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof ApiError && error.status === 401) return showLogin('Your login is no longer valid.');
      }
      // Changes may have been missed while the stream was down: every page refreshes.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      session.page?.refresh();
    }
  })();
}

function stopStream() {
  session.stream?.abort();
  session.stream = null;
}

function onChange(name, data) {
  if (name === 'groups') session.page?.changed(data.Groups, data.Total);
}

// ------------------------------------------------------------------ pages

function stopPage() {
  session.page?.destroy();
  session.page = null;
}

function route() {
  if (session.me === null) return;
  const hash = window.location.hash;
  const view = h('div');
  stopPage();
  $('view').replaceChildren(view);
  const context = { admin: session.me.Role === 'administrators', me: session.me };
  let current = 'groups';
  if (hash.startsWith('#/group/')) {
    current = null;
    session.page = groupPage(view, context, decodeURIComponent(hash.slice('#/group/'.length)));
  } else if (hash === '#/cluster') {
    current = 'cluster';
    session.page = clusterPage(view, context);
  } else {
    session.page = groupsPage(view, context);
  }
  for (const link of document.querySelectorAll('#nav a')) {
    if (link.dataset.page === current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  view.querySelector('h1')?.focus();
}

start();
