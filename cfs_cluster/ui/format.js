// Times and roles as an operator reads them.

export const ROLES = ['Secondary', 'Primary', 'PendingPrimary'];

const UNKNOWN = '0001-01-01T00:00:00';

export function parseTime(text) {
  if (!text || text.startsWith(UNKNOWN)) return null;
  // .NET times carry up to 7 fractional digits; Date wants at most 3.
  const trimmed = text.replace(/(\.\d{3})\d+/, '$1');
  const date = new Date(trimmed.endsWith('Z') || /[+-]\d\d:\d\d$/.test(trimmed) ? trimmed : `${trimmed}Z`);
  return Number.isNaN(date.getTime()) ? null : date;
}

const pad = (n) => String(n).padStart(2, '0');

export function localTime(text) {
  const date = parseTime(text);
  if (date === null) return '—';
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return 'never';
  if (seconds < 60) return `${seconds.toFixed(1)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

// "[d.]hh:mm:ss[.fffffff]" -> seconds
export function timespanSeconds(text) {
  const match = /^(?:(\d+)\.)?(\d+):(\d\d):(\d\d(?:\.\d+)?)$/.exec(text ?? '');
  if (!match) return null;
  const [, days, hours, minutes, seconds] = match;
  return Number(days ?? 0) * 86400 + Number(hours) * 3600 + Number(minutes) * 60 + Number(seconds);
}

export function duration(text) {
  const seconds = timespanSeconds(text);
  if (seconds === null) return text ?? '—';
  if (seconds === 0) return '—';
  return seconds < 120 ? `${seconds.toFixed(1)} s` : `${Math.round(seconds / 60)} min`;
}
