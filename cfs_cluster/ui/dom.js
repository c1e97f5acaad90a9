// Small helpers to build the page without innerHTML: every text from the API is set as text,
// so a group or session id can never inject markup.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === 'class') element.className = value;
    else if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : value);
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

export function announce(text) {
  const region = document.getElementById('announce');
  region.append(h('p', {}, text));
  while (region.childElementCount > 5) region.firstElementChild.remove();
}

// One confirmation dialog for every action: says what will happen, resolves true on OK.
export function confirmAction({ title, text, ok, extra = null }) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = ok;
  document.getElementById('confirm-extra').replaceChildren(...(extra ? [extra] : []));
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.addEventListener(
      'close',
      () => {
        opener?.focus?.();
        resolve(dialog.returnValue === 'ok');
      },
      { once: true },
    );
    dialog.returnValue = 'cancel';
    dialog.showModal();
    document.getElementById('confirm-cancel').focus();
  });
}

export function message(container, text, kind = 'error') {
  container.replaceChildren(text ? h('p', { class: kind, role: kind === 'error' ? 'alert' : 'status' }, text) : '');
}
