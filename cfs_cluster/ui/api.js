// Every request the page makes goes through here: same origin, relative URLs (the page works
// behind a proxy and over TLS), the user's credentials in an Authorization header held in
// memory only, and never the browser's own stored credentials or cookies (credentials: omit).

let authorization = null;

export function setCredentials(user, password) {
  authorization = user === null ? null : `Basic ${base64(`${user}:${password}`)}`;
}

export function forgetCredentials() {
  authorization = null;
}

function base64(text) {
  // btoa() takes Latin-1 only; user names and passwords may be any UTF-8 (RFC 7617 charset).
  let binary = '';
  for (const byte of new TextEncoder().encode(text)) binary += String.fromCharCode(byte);
  return btoa(binary);
}

// The API's paths are absolute; the page lives at <base>/ui/, so they resolve against "..".
function url(path, params) {
  const target = new URL(`..${path}`, document.baseURI);
  for (const [name, value] of Object.entries(params ?? {})) {
    if (value !== undefined && value !== null && value !== '') target.searchParams.set(name, value);
  }
  return target;
}

function headers(accept, body) {
  const result = { Accept: accept };
  if (authorization !== null) result.Authorization = authorization;
  if (body !== undefined) result['Content-Type'] = 'application/json';
  return result;
}

export class ApiError extends Error {
  constructor(status, body) {
    // The ErrorResponse body (docs/api.md): its Reason is what the operator needs to read.
    const reason = body?.Reason ?? body?.Error ?? `The node answered ${status}.`;
    super(reason);
    this.status = status;
    this.body = body;
  }

  get describe() {
    const resolution = this.body?.Resolution ? ` ${this.body.Resolution}` : '';
    return `${this.status}: ${this.message}${resolution}`;
  }
}

export async function call(method, path, { params, body, signal } = {}) {
  let response;
  try {
    response = await fetch(url(path, params), {
      method,
      headers: headers('application/json', body),
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
      signal,
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, { Reason: 'The node could not be reached.' });
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { Reason: text.slice(0, 200) };
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, params, signal) => call('GET', path, { params, signal });

// A server-sent event stream read with fetch(): EventSource cannot send an Authorization
// header. Calls onEvent(name, data) for every event; returns when the node ends the stream.
export async function follow(path, onEvent, signal) {
  const response = await fetch(url(path), {
    headers: headers('text/event-stream'),
    credentials: 'omit',
    cache: 'no-store',
    signal,
  });
  if (!response.ok) throw new ApiError(response.status, null);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll('\r\n', '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      dispatchBlock(block, onEvent);
    }
  }
}

function dispatchBlock(block, onEvent) {
  let name = 'message';
  const data = [];
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) name = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
  }
  if (data.length > 0) onEvent(name, JSON.parse(data.join('\n')));
}
