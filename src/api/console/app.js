// The changetrail console: a thin client of the REST API, no framework and no build step.
// Everything shown comes from outside (telemetry, imports, tokens' names), so text is only ever
// inserted with textContent and DOM calls, never as HTML. The token lives in sessionStorage: it
// goes when the tab closes, and no other tab or later visit can read it.
'use strict';

(() => {
  const TOKEN_KEY = 'changetrail.token';
  // The codes of the SOC 2 rules (src/core/rules.rs ALL; a test in src/api/console.rs keeps the
  // two lists equal).
  const EXCEPTION_CODES = [
    'NO_APPROVAL', 'SELF_APPROVAL', 'APPROVAL_AFTER_DEPLOY', 'APPROVER_NOT_AUTHORIZED',
    'UNVERIFIED_IDENTITY', 'APPROVAL_BYPASSED', 'APPROVED_SUBJECT_MISMATCH', 'UNLINKED_DEPLOY',
    'EMERGENCY_NO_REVIEW', 'ROLLBACK_UNLINKED', 'HISTORY_REWRITTEN', 'EVIDENCE_GAP',
    'APPROVAL_DECISION_MISSING', 'CONFLICTING_EVIDENCE', 'LATE_EVIDENCE', 'TOKEN_REUSED',
    'APPROVAL_TOKEN_MISMATCH', 'CREDENTIAL_NOT_ROTATED', 'CHANGE_REGRESSION',
  ];
  // Which page of a change an exception concerns, so it is marked on that step as well.
  const CONCERNS = {
    NO_APPROVAL: 'approval', SELF_APPROVAL: 'approval', APPROVAL_AFTER_DEPLOY: 'approval',
    APPROVER_NOT_AUTHORIZED: 'approval', APPROVAL_BYPASSED: 'approval',
    APPROVED_SUBJECT_MISMATCH: 'approval', EMERGENCY_NO_REVIEW: 'requested',
    ROLLBACK_UNLINKED: 'rollback', HISTORY_REWRITTEN: 'deploy', UNLINKED_DEPLOY: 'deploy',
    EVIDENCE_GAP: 'ledger', APPROVAL_DECISION_MISSING: 'approval', APPROVAL_TOKEN_MISMATCH: 'approval',
    CREDENTIAL_NOT_ROTATED: 'deploy', CONFLICTING_EVIDENCE: 'requested', LATE_EVIDENCE: 'requested',
    CHANGE_REGRESSION: 'deploy',
  };
  const PAGES = {
    dashboard: 'Dashboard',
    changes: 'Changes',
    alerts: 'Alerts',
    reports: 'Reports',
    ledger: 'Ledger',
    tokens: 'Tokens',
  };
  const CONSOLE_ROLES = 'auditor (dashboard, changes, alerts and reports), reviewer (ledger and alerts) or admin (tokens)';

  const state = { token: null, session: null, render: 0 };

  // ---------------------------------------------------------------------------------------
  // DOM helpers.

  /** An element: attributes (text, class, on…, booleans) and children (nodes or strings). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') el.textContent = String(v);
      else if (k === 'class') el.className = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------
  // Formatting.

  /** Nanoseconds since the epoch as "2026-01-01 10:00:00 UTC" (audits are read in UTC). */
  function utc(ns) {
    if (ns === null || ns === undefined) return '—';
    const d = new Date(Number(ns) / 1e6);
    if (Number.isNaN(d.getTime())) return '—';
    return d.toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
  }

  function duration(fromNs, toNs) {
    if (fromNs == null || toNs == null) return '';
    const s = Math.max(0, Math.round((Number(toNs) - Number(fromNs)) / 1e9));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  const dash = (v) => (v === null || v === undefined || v === '' ? '—' : String(v));

  /** A monospace id or hash, cut with an ellipsis by CSS, the whole value in its title. */
  function mono(value, cls) {
    if (value === null || value === undefined) return h('span', { class: 'muted', text: '—' });
    return h('code', { class: `mono ${cls || 'ellipsis'}`, title: String(value), text: String(value) });
  }

  /** Trace id → its page in the team's tracing UI, from the packet on show (`[links] trace_url`). */
  let traceLinks = {};

  /** A trace id, as a link into the tracing UI when one is configured for it. */
  function traceRef(id, cls) {
    const url = id ? traceLinks[id] : null;
    if (typeof url !== 'string' || !/^https?:\/\//.test(url)) return mono(id, cls);
    return h('a', { class: 'trace-link', href: url, target: '_blank', rel: 'noopener noreferrer', title: `open trace ${id} in the tracing UI` }, mono(id, cls));
  }

  function badge(text, kind, title) {
    return h('span', { class: `badge ${kind}`, title: title || null, text });
  }

  /** A principal (requester, approver, worker) with how its identity was established. */
  function principal(p, stacked) {
    if (!p) return h('span', { class: 'muted', text: 'unknown' });
    const who = p.subject || '(no subject)';
    const verified = p.established === 'verified';
    const title = verified
      ? `Verified by ${p.issuer || 'a trusted issuer'}${p.roles && p.roles.length ? `; roles: ${p.roles.join(', ')}` : ''}`
      : `Asserted only: ${p.reason || 'no token verified it'}`;
    return h('span', { class: `principal${stacked ? ' stacked' : ''}` },
      h('span', { class: 'subject', text: who }), ' ',
      badge(verified ? 'verified' : 'asserted', verified ? 'ok' : 'warn', title));
  }

  /** One badge per code (a change can have a code twice, e.g. two unverified identities); the
   * evidence of each in its title. */
  function exceptionBadges(xs) {
    if (!xs || xs.length === 0) return h('span', { class: 'muted', text: 'none' });
    const byCode = new Map();
    for (const x of xs) byCode.set(x.code, (byCode.get(x.code) || []).concat(x.evidence));
    return h('span', { class: 'badges' },
      [...byCode].map(([code, evidence]) => codeBadge(code, evidence.join('\n'))));
  }

  /** An exception code's badge with a break opportunity after each '_'. Badges never wrap on
   * screen; on paper the list's last column may wrap a long code there (APPROVED_SUBJECT_ /
   * MISMATCH) rather than push the table past the page's edge. */
  function codeBadge(code, title) {
    const parts = code.split('_');
    return h('span', { class: 'badge bad', title },
      parts.map((p, i) => (i < parts.length - 1 ? [`${p}_`, h('wbr', {})] : p)));
  }

  function resultBadge(result) {
    if (!result) return h('span', { class: 'muted', text: '—' });
    const kind = result === 'success' ? 'ok' : (result === 'running' ? 'neutral' : 'bad');
    return badge(result, kind);
  }

  // A rewrite with its diff (kinds, the run's status, each task before and after); one recorded
  // before rewrites carried a diff names only the task ids that vanished.
  function rewriteBody(r) {
    const tasks = r.tasks || [];
    if (!tasks.length && !(r.kinds || []).length) {
      return h('p', { text: `${r.operation}: ${r.vanished_tasks.length} earlier task records vanished` });
    }
    const run = r.run_status_before ? `; run ${r.run_status_before} → ${r.run_status_after || 'gone'}` : '';
    const state = (t) => (t ? `${t.status}${t.retry_count ? ` (retry ${t.retry_count})` : ''}` : '—');
    return [
      h('p', { text: `${r.kinds.join(', ')}${run}` }),
      tasks.length ? table(['Kind', 'Task', 'Before', 'After', 'Changed'], tasks.map((c) => h('tr', {},
        td(c.kind), td(mono(`${c.reference} ${c.task_id}`, 'short')), td(state(c.before)), td(state(c.after)),
        td((c.changed || []).join(', ') || (c.after ? 'added' : 'vanished')))), { caption: 'Tasks whose recorded history changed' }) : null,
    ];
  }

  function table(headers, rows, opts) {
    const o = opts || {};
    return h('div', { class: 'table-wrap' },
      h('table', { class: o.class || null },
        o.caption ? h('caption', { text: o.caption }) : null,
        h('thead', {}, h('tr', {}, headers.map((c) => {
          const [label, cls] = Array.isArray(c) ? c : [c, null];
          return h('th', { scope: 'col', class: cls, text: label });
        }))),
        h('tbody', {}, rows)));
  }

  function td(content, cls) {
    return h('td', { class: cls || null }, content);
  }

  function facts(pairs) {
    return h('dl', { class: 'facts' }, pairs.filter(Boolean).map(([k, v]) => [
      h('dt', { text: k }), h('dd', {}, v instanceof Node ? v : dash(v)),
    ]));
  }

  function panel(kind, title, ...body) {
    return h('section', { class: `panel ${kind}`, role: kind === 'bad' ? 'alert' : null },
      title ? h('h2', { class: 'panel-title', text: title }) : null, body);
  }

  function section(title, ...body) {
    return h('section', { class: 'section' }, h('h2', { text: title }), body);
  }

  // ---------------------------------------------------------------------------------------
  // The API.

  class HttpError extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  async function call(method, path, opts) {
    const o = opts || {};
    const token = o.token || state.token;
    const headers = { Authorization: `Bearer ${token}`, Accept: o.accept || 'application/json' };
    if (o.body !== undefined) headers['Content-Type'] = 'application/json';
    let r;
    try {
      r = await fetch(path, {
        method,
        headers,
        body: o.body === undefined ? undefined : JSON.stringify(o.body),
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      throw new HttpError(0, 'changetrail did not answer; is the server running?');
    }
    if (r.status === 401 && !o.token) {
      signOut('Your token is no longer accepted (revoked or unknown). Sign in again.');
      throw new HttpError(401, 'signed out');
    }
    if (!r.ok) {
      let message = `${r.status} ${r.statusText}`;
      try {
        const text = await r.text();
        try {
          const j = JSON.parse(text);
          if (j && j.message) message = j.message;
        } catch (_) {
          if (text) message = text;
        }
      } catch (_) { /* keep the status line */ }
      throw new HttpError(r.status, message, r.headers.get('Retry-After'));
    }
    return o.raw ? r : r.json();
  }

  function errorPanel(e) {
    if (e instanceof HttpError && e.status === 401) return null;
    const what = e instanceof HttpError && e.status === 403
      ? 'Your role may not see this.'
      : 'Something went wrong.';
    return panel('bad', what, h('p', { text: e.message || String(e) }));
  }

  // ---------------------------------------------------------------------------------------
  // Signing in and out.

  function showChrome(on) {
    $('nav').hidden = !on;
    $('who').hidden = !on;
  }

  function renderNav(current) {
    const nav = clear($('nav'));
    const pages = state.session ? state.session.pages : [];
    for (const p of pages) {
      nav.append(h('a', {
        href: `#/${p}`,
        class: p === current ? 'active' : null,
        'aria-current': p === current ? 'page' : null,
        text: PAGES[p] || p,
      }));
    }
  }

  function renderSignIn(message, kind) {
    showChrome(false);
    document.title = 'Sign in · changetrail';
    const input = h('input', {
      id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false',
      required: true, placeholder: 'ct_…', 'aria-describedby': 'token-help',
    });
    const status = h('div', { id: 'signin-status', 'aria-live': 'polite' });
    if (message) status.append(h('p', { class: `notice ${kind || 'neutral'}`, text: message }));
    const button = h('button', { type: 'submit', class: 'button primary', text: 'Sign in' });
    const form = h('form', {
      class: 'signin', id: 'signin',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const token = input.value.trim();
        if (!token) return;
        button.disabled = true;
        clear(status).append(h('p', { class: 'notice neutral', text: 'Checking the token…' }));
        try {
          const s = await call('GET', '/v1/session', { token });
          if (!s.pages || s.pages.length === 0) {
            clear(status).append(h('p', {
              class: 'notice bad', id: 'refusal', role: 'alert',
              text: `This token has the role ${s.role}, which has no pages in the console. `
                + `Sign in with a token of role ${CONSOLE_ROLES}.`,
            }));
            input.value = '';
            return;
          }
          state.token = token;
          state.session = s;
          sessionStorage.setItem(TOKEN_KEY, token);
          input.value = '';
          const want = location.hash.slice(2).split(/[/?]/)[0];
          if (!s.pages.includes(want)) location.hash = `#/${s.pages[0]}`;
          else route();
        } catch (e) {
          const text = e instanceof HttpError && e.status === 401
            ? 'That token was not accepted: it is unknown, revoked or mistyped.'
            : e.message;
          clear(status).append(h('p', { class: 'notice bad', role: 'alert', text }));
        } finally {
          button.disabled = false;
        }
      },
    },
    h('h1', { text: 'Sign in' }),
    h('p', { class: 'lede', text: 'changetrail links production changes to signed, hash-chained evidence. Sign in with an API token.' }),
    h('label', { for: 'token', text: 'API token' }),
    input,
    h('p', { id: 'token-help', class: 'help', text: `Tokens of role ${CONSOLE_ROLES} can use the console. The token is kept in this tab only and forgotten when it closes.` }),
    button,
    status);
    clear($('main')).append(form);
    input.focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.session = null;
    state.render += 1;
    renderSignIn(message || 'Signed out.', message ? 'bad' : 'neutral');
  }

  // ---------------------------------------------------------------------------------------
  // Routing: #/page/rest?query

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, '');
    const [path, query] = raw.split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return { page: parts[0] || '', rest: parts.slice(1), params: new URLSearchParams(query || '') };
  }

  async function route() {
    if (!state.token || !state.session) {
      renderSignIn();
      return;
    }
    const { page, rest, params } = parseHash();
    const pages = state.session.pages;
    if (!pages.includes(page)) {
      location.replace(`#/${pages[0]}`);
      return;
    }
    showChrome(true);
    $('who-name').textContent = state.session.name;
    $('who-role').textContent = state.session.role;
    renderNav(page);
    const ticket = ++state.render;
    delete document.documentElement.dataset.shown;
    const main = $('main');
    const view = h('div', { class: 'view', 'aria-busy': 'true' },
      h('p', { class: 'muted loading', text: 'Loading…' }));
    clear(main).append(view);
    let content;
    try {
      if (page === 'changes' && rest.length > 0) content = await changePage(rest.join('/'));
      else if (page === 'changes') content = await changesPage(params);
      else if (page === 'ledger') content = await ledgerPage();
      else if (page === 'alerts') content = await alertsPage();
      else if (page === 'dashboard') content = await dashboardPage(params);
      else if (page === 'reports') content = reportsPage();
      else if (page === 'tokens') content = await tokensPage();
    } catch (e) {
      content = errorPanel(e);
    }
    // A later navigation won: drop this render.
    if (ticket !== state.render) return;
    view.removeAttribute('aria-busy');
    append(clear(view), [content]);
    // Which location the page now shows: tests (and scripts) wait on it instead of guessing.
    document.documentElement.dataset.shown = location.hash;
  }

  // ---------------------------------------------------------------------------------------
  // Changes.

  /** A date input's value as the start of that day (UTC), or as the start of the next one. */
  function dayStart(value, next) {
    if (!value) return null;
    const d = new Date(`${value}T00:00:00Z`);
    if (Number.isNaN(d.getTime())) return null;
    if (next) d.setUTCDate(d.getUTCDate() + 1);
    return d.toISOString().replace('.000Z', 'Z');
  }

  function approverOf(c) {
    const a = c.approvals.find((x) => x.decision === 'approved') || c.approvals[0];
    if (!a) return h('span', { class: 'muted', text: 'none' });
    const who = principal(a.approver, true);
    return a.decision === 'approved' ? who : h('span', {}, who, ' ', badge(a.decision, 'bad'));
  }

  function attemptsOf(c) {
    return c.steps.reduce((n, s) => n + s.attempts.length, 0);
  }

  /** The default period: the last 30 days (UTC dates, today inclusive). Without one, the first
   * page would fold the whole ledger (about 11 s at 100,000 changes); with it, a month's worth.
   * An empty field in the URL (from=) still means "at any date". */
  const DEFAULT_DAYS = 30;

  function isoDay(d) {
    return d.toISOString().slice(0, 10);
  }

  function defaultPeriod() {
    const to = new Date();
    const from = new Date(to.getTime());
    from.setUTCDate(from.getUTCDate() - (DEFAULT_DAYS - 1));
    return { from: isoDay(from), to: isoDay(to) };
  }

  async function changesPage(params) {
    const dflt = params.has('from') || params.has('to') ? { from: '', to: '' } : defaultPeriod();
    const f = {
      from: params.has('from') ? params.get('from') : dflt.from,
      to: params.has('to') ? params.get('to') : dflt.to,
      environment: params.get('environment') || '',
      service: params.get('service') || '',
      exception: params.get('exception') || '',
      limit: Number(params.get('limit')) || 25,
      offset: Math.max(0, Number(params.get('offset')) || 0),
    };
    const q = new URLSearchParams();
    const from = dayStart(f.from, false);
    const to = dayStart(f.to, true);
    if (from) q.set('from', from);
    if (to) q.set('to', to);
    for (const k of ['environment', 'service', 'exception']) if (f[k]) q.set(k, f[k]);
    q.set('limit', String(f.limit));
    q.set('offset', String(f.offset));
    document.title = 'Changes · changetrail';

    const form = filterForm(f);
    let data;
    try {
      data = await call('GET', `/v1/changes?${q}`);
    } catch (e) {
      return [h('h1', { text: 'Changes' }), form, errorPanel(e)];
    }
    const rows = data.changes.map((c) => {
      const ch = c.change;
      return h('tr', { 'data-change': ch.id, class: c.exceptions.length ? 'has-exceptions' : null },
        td([
          h('div', { class: 'nowrap', text: utc(ch.requested_ns).slice(0, 10) }),
          h('div', { class: 'sub', text: utc(ch.requested_ns).slice(11, 19) }),
        ]),
        td(h('a', { href: `#/changes/${encodeURIComponent(ch.id)}`, class: 'mono', text: ch.id }), 'nowrap'),
        td([
          h('div', { class: 'nowrap', text: dash(ch.service) }),
          h('div', { class: 'sub' }, mono(ch.version, 'short'), ' · ', h('span', { text: dash(ch.environment) }),
            ch.production ? null : h('span', { class: 'muted', text: ' (not production)' })),
        ]),
        td(principal(c.requester, true)),
        td(approverOf(c)),
        td(resultBadge(ch.result)),
        td(String(attemptsOf(c)), 'num'),
        td(exceptionBadges(c.exceptions), 'exceptions'));
    });
    const first = data.total === 0 ? 0 : data.offset + 1;
    const last = data.offset + data.changes.length;
    const go = (offset) => {
      const p = filterParams(f);
      p.set('offset', String(Math.max(0, offset)));
      location.hash = `#/changes?${p}`;
    };
    const pager = h('nav', { class: 'pager', 'aria-label': 'Pages of changes' },
      h('button', {
        type: 'button', class: 'button', id: 'prev', disabled: data.offset === 0,
        onclick: () => go(data.offset - data.limit), text: '← Previous',
      }),
      h('span', { id: 'showing', 'aria-live': 'polite', text: data.total === 0 ? 'No changes match.' : `Showing ${first}–${last} of ${data.total}` }),
      h('button', {
        type: 'button', class: 'button', id: 'next', disabled: last >= data.total,
        onclick: () => go(data.offset + data.limit), text: 'Next →',
      }));
    // The filters as applied, for paper only: the form does not print what it means (an empty
    // date prints "mm/dd/yyyy", an empty environment its placeholder).
    const period = f.from && f.to ? `${f.from} to ${f.to} (UTC, inclusive)`
      : (f.from ? `from ${f.from} (UTC)` : (f.to ? `up to ${f.to} (UTC, inclusive)` : 'at any date'));
    const applied = h('p', {
      class: 'print-only', id: 'print-filters',
      text: `Filters: requested ${period} · environment ${f.environment || 'any'} · service ${f.service || 'any'} · exception ${f.exception || 'any'}`,
    });
    return [
      h('h1', { text: 'Changes' }),
      h('p', { class: 'lede', text: `Changes requested in the period (the last ${DEFAULT_DAYS} days unless you choose another; clear both dates for every change), each judged by the SOC 2 report's exception rules (production changes only). Times are UTC.` }),
      applied,
      form,
      table([
        'Requested (UTC)', 'Change', 'Service · version · environment', 'Requester', 'Approver',
        'Result', ['Attempts', 'num'], 'Exceptions',
      ], rows.length ? rows : [h('tr', {}, h('td', { colspan: 8, class: 'muted empty', text: 'No changes match these filters.' }))],
      { class: 'changes' }),
      pager,
    ];
  }

  function filterParams(f) {
    const p = new URLSearchParams();
    // The period always, even empty: an absent one means the default (the last 30 days).
    for (const k of ['from', 'to']) p.set(k, f[k] || '');
    for (const k of ['environment', 'service', 'exception']) if (f[k]) p.set(k, f[k]);
    if (f.limit !== 25) p.set('limit', String(f.limit));
    return p;
  }

  function filterForm(f) {
    const field = (name, label, input) => h('div', { class: 'field' },
      h('label', { for: `f-${name}`, text: label }), input);
    const text = (name, value, placeholder) => h('input', {
      id: `f-${name}`, name, type: 'text', value, placeholder, autocomplete: 'off',
    });
    const exception = h('select', { id: 'f-exception', name: 'exception' },
      h('option', { value: '', text: 'any' }),
      EXCEPTION_CODES.map((c) => h('option', { value: c, selected: c === f.exception, text: c })));
    const limit = h('select', { id: 'f-limit', name: 'limit' },
      [10, 25, 50, 100].map((n) => h('option', { value: n, selected: n === f.limit, text: String(n) })));
    return h('form', {
      class: 'filters', id: 'filters', role: 'search',
      onsubmit: (ev) => {
        ev.preventDefault();
        const d = new FormData(ev.target);
        const next = {};
        for (const k of ['from', 'to', 'environment', 'service', 'exception']) next[k] = String(d.get(k) || '').trim();
        next.limit = Number(d.get('limit')) || 25;
        location.hash = `#/changes?${filterParams(next)}`;
      },
    },
    field('from', 'From (UTC)', h('input', { id: 'f-from', name: 'from', type: 'date', value: f.from })),
    field('to', 'To (UTC, inclusive)', h('input', { id: 'f-to', name: 'to', type: 'date', value: f.to })),
    field('environment', 'Environment', text('environment', f.environment, 'production')),
    field('service', 'Service', text('service', f.service, 'any')),
    field('exception', 'Exception', exception),
    field('limit', 'Per page', limit),
    h('div', { class: 'field actions' },
      h('button', { type: 'submit', class: 'button primary', text: 'Apply' }),
      h('a', { href: '#/changes', class: 'button quiet', text: 'Reset' })));
  }

  // ---------------------------------------------------------------------------------------
  // One change.

  /** The step an exception concerns; an unverified identity or a reused token is on the step of
   * whose it is (the rule's evidence starts "requester …", "approver …" or "deployer …", or
   * "the requester …" for a token). */
  function concerns(x) {
    if (x.code === 'UNVERIFIED_IDENTITY' || x.code === 'TOKEN_REUSED') {
      const e = x.evidence.replace(/^the /, '');
      if (e.startsWith('approver')) return 'approval';
      if (e.startsWith('deployer')) return 'deploy';
      return 'requested';
    }
    return CONCERNS[x.code] || 'requested';
  }

  /** Who handed the service a fact: an ingest token's name and id, or an importing operator. */
  function senders(list) {
    const all = (list || []).filter(Boolean);
    if (!all.length) return null;
    return h('span', { class: 'list' }, all.map((s) => h('span', { class: 'sender' },
      h('span', { text: s.name }), s.token_id ? [' ', mono(s.token_id, 'short')] : null)));
  }

  function flagged(xs, where) {
    return xs.filter((x) => concerns(x) === where);
  }

  function exceptionNotes(xs) {
    if (!xs.length) return null;
    return h('ul', { class: 'step-exceptions' }, xs.map((x) => h('li', {},
      badge(x.code, 'bad'), ' ', h('span', { text: x.evidence }))));
  }

  function step(kind, title, time, body, xs) {
    const bad = xs && xs.length > 0;
    return h('li', { class: `step ${kind}${bad ? ' flagged' : ''}`, 'data-step': kind },
      h('div', { class: 'step-head' },
        h('h3', { class: 'step-title', text: title }),
        time ? h('span', { class: 'step-time', text: time }) : null),
      h('div', { class: 'step-body' }, body, exceptionNotes(xs || [])));
  }

  function attemptTable(attempts) {
    return table(['#', 'Result', 'Started', 'Took', 'Received from', 'Worker, trace', 'Identity', 'Retried from', 'Reason'],
      attempts.map((a) => h('tr', { class: a.result === 'success' ? null : 'failed' },
        td(String(a.attempt + 1), 'num'),
        td(resultBadge(a.result)),
        td(utc(a.start_ns), 'nowrap'),
        td(duration(a.start_ns, a.end_ns), 'nowrap'),
        td(h('span', { class: 'stacked' }, h('span', { class: 'nowrap', text: utc(a.received_ns) }), senders(a.sent_by))),
        td(h('span', { class: 'stacked' }, a.worker ? mono(a.worker, 'short') : '—', a.trace_id ? traceRef(a.trace_id, 'short') : null)),
        td(a.identity ? principal(a.identity) : h('span', { class: 'muted', text: '—' })),
        td(mono(a.retried_from, 'short')),
        td(dash(a.reason)))),
      { class: 'attempts' });
  }

  /** A deploy step: one attempt shown as is; retries collapsed into one expandable group. */
  function deployStep(s, xs) {
    const n = s.attempts.length;
    const ok = s.attempts.filter((a) => a.result === 'success').length;
    const failed = n - ok;
    const first = s.attempts[0];
    const title = `Deploy: ${s.task}${s.task_type && s.task_type !== s.task ? ` (${s.task_type})` : ''}`;
    let body;
    if (n > 1) {
      const parts = [];
      if (failed) parts.push(`${failed} failed`);
      if (ok) parts.push(`${ok} succeeded`);
      body = h('details', { class: 'retries' },
        h('summary', {}, h('span', { class: 'retry-summary', text: `${n} attempts: ${parts.join(', ')}` }), ' ', resultBadge(s.outcome)),
        h('p', { class: 'muted small', text: s.summary }),
        attemptTable(s.attempts));
    } else {
      body = [h('p', {}, resultBadge(s.outcome), ' ', h('span', { text: s.summary })), attemptTable(s.attempts)];
    }
    return step('deploy', title, first ? utc(first.start_ns) : null, body, xs);
  }

  async function changePage(id) {
    document.title = `${id} · changetrail`;
    const p = await call('GET', `/v1/changes/${encodeURIComponent(id)}`);
    traceLinks = (p && p.trace_links) || {};
    const c = p.change;
    const xs = p.exceptions || [];
    const verdict = xs.length
      ? panel('bad', `${xs.length} exception${xs.length === 1 ? '' : 's'} under the SOC 2 rules`,
        h('ul', { class: 'exceptions' }, xs.map((x) => h('li', {}, badge(x.code, 'bad'), ' ', h('span', { text: x.evidence })))))
      : (c.production
        ? panel('ok', null, h('p', { text: 'No exceptions under the SOC 2 rules.' }))
        : panel('neutral', null, h('p', { text: 'Not a production change: the SOC 2 rules do not judge it.' })));

    const header = facts([
      ['Change', mono(c.id, 'full')],
      ['Kind', c.kind],
      ['Service', c.service],
      ['Environment', c.environment ? h('span', {}, c.environment, ' ', c.production ? badge('production', 'neutral') : null) : null],
      ['Version', mono(c.version, 'full')],
      ['Artifact', mono(c.artifact)],
      ['Revision', mono(c.revision)],
      ['Pipeline', c.pipeline],
      ['Result', resultBadge(c.result)],
      ['Requested', utc(c.requested_ns)],
      ['Finished', utc(c.finished_ns)],
      (c.sent_by || []).length ? ['Sent by', senders(c.sent_by)] : null,
      ['Runs', c.runs.length ? h('span', {}, c.runs.map((r) => mono(r, 'short'))) : null],
      c.justification ? ['Justification', c.justification] : null,
    ]);

    const steps = [];
    steps.push(step('requested', 'Requested', utc(c.requested_ns || p.timeline.requested_ns),
      h('p', {}, 'by ', principal(p.requester), c.kind !== 'normal' ? [' · ', badge(c.kind, c.kind === 'emergency' ? 'warn' : 'neutral')] : null),
      flagged(xs, 'requested')));
    const approvalXs = flagged(xs, 'approval');
    if (p.approvals.length === 0) {
      steps.push(step('approval', 'No approval recorded', null,
        h('p', { class: 'muted', text: 'No approval decision is in the evidence.' }), approvalXs));
    }
    p.approvals.forEach((a, i) => {
      if (a.requested_ns != null) {
        steps.push(step('approval-requested', 'Approval requested', utc(a.requested_ns), h('p', { class: 'muted', text: `via ${a.method}` }), []));
      }
      steps.push(step('approval', `Approval ${a.decision}`, utc(a.decided_ns),
        [
          h('p', { class: 'approver' }, a.decision === 'approved' ? 'approved by ' : `${a.decision} by `, principal(a.approver)),
          facts([
            ['Decided', utc(a.decided_ns)],
            ['Received', utc(a.received_ns)],
            ['Method', a.method],
            a.sent_by ? ['Sent by', senders([a.sent_by])] : null,
            a.stated_decision ? ['Stated decision', a.stated_decision] : null,
            a.approved_subject ? ['Approved subject', mono(a.approved_subject)] : null,
            a.before_first_deploy === null || a.before_first_deploy === undefined ? null
              : ['Before the first deploy', a.before_first_deploy ? 'yes' : h('strong', { class: 'bad-text', text: 'no' })],
          ]),
        ],
        i === 0 ? approvalXs : []));
    });
    for (const g of p.gates || []) {
      const kind = g.decision === 'allow' ? 'ok' : 'bad';
      steps.push(step('gate', `Deploy gate: ${g.decision}`, utc(g.decided_ns), [
        h('p', {}, badge(g.decision, kind), ' ', h('span', { text: `to ${g.environment}, artifact ` }), mono(g.artifact_digest)),
        h('ul', { class: 'exceptions' }, g.reasons.map((r) => h('li', {}, badge(r.code, kind), ' ', h('span', { text: r.detail })))),
        facts([
          ['Entry', String(g.seq)],
          ['Asked by', g.asked_by ? senders([g.asked_by]) : null],
          ['Evidence read', `entries below ${g.evidence_size}`],
        ]),
      ], []));
    }
    const deployXs = flagged(xs, 'deploy');
    if (p.steps.length === 0) {
      steps.push(step('deploy', 'No deploy attempt recorded', null, h('p', { class: 'muted', text: 'No deploy task is in the evidence.' }), deployXs));
    }
    p.steps.forEach((s, i) => steps.push(deployStep(s, i === 0 ? deployXs : [])));
    for (const r of p.history_rewrites || []) {
      steps.push(step('rewrite', 'Workflow history rewritten', utc(r.detected_ns), rewriteBody(r), []));
    }
    const sp = p.spans;
    steps.push(step('runtime', 'Runtime spans', null, [
      facts([
        ['Spans', String(sp.count)],
        ['Traces', sp.traces.length ? h('span', { class: 'list' }, sp.traces.map((t) => traceRef(t, 'short'))) : null],
        ['Services', sp.services.join(', ')],
        ['Errors', sp.errors ? h('strong', { class: 'bad-text', text: String(sp.errors) }) : '0'],
        ['Bound by', Object.entries(sp.by_rule).map(([k, v]) => `${k} ${v}`).join(', ')],
      ]),
      p.versions.length ? table(['Service', 'Environment', 'Version', 'First seen'], p.versions.map((v) => h('tr', {},
        td(v.service), td(v.environment), td(mono(v.version, 'short')), td(utc(v.first_seen_ns), 'nowrap'))), { caption: 'Versions this change explains' }) : null,
    ], []));
    const rb = flagged(xs, 'rollback');
    if (c.kind === 'rollback' || c.rollback_of || (p.rolled_back_by || []).length || (c.compensation_runs || []).length || rb.length) {
      steps.push(step('rollback', 'Rollbacks', null, facts([
        ['Rolls back', c.rollback_of ? h('a', { href: `#/changes/${encodeURIComponent(c.rollback_of)}`, class: 'mono', text: c.rollback_of }) : (c.kind === 'rollback' ? 'names nothing' : null)],
        ['Rolled back by', (p.rolled_back_by || []).length ? h('span', { class: 'list' }, p.rolled_back_by.map((r) => h('a', { href: `#/changes/${encodeURIComponent(r)}`, class: 'mono', text: r }))) : 'nothing'],
        (c.compensation_runs || []).length ? ['Compensation runs', c.compensation_runs.join(', ')] : null,
      ]), rb));
    }

    const entries = table(['Seq', 'Kind', 'Leaf hash', 'Proof'], p.entries.map((e) => h('tr', {},
      td(String(e.seq), 'num'), td(e.kind), td(mono(e.leaf_hash)),
      td(e.inclusion_proof ? `${e.inclusion_proof.length} hashes to size ${p.checkpoint_size}` : h('span', { class: 'muted', text: 'not yet covered' })))),
    { class: 'entries' });
    const note = p.checkpoint
      ? h('details', { class: 'note' }, h('summary', { text: `Signed checkpoint (size ${p.checkpoint_size}) the proofs are against` }), h('pre', { text: p.checkpoint }))
      : h('p', { class: 'muted', text: 'No checkpoint covers these entries yet.' });

    return [
      h('p', { class: 'crumbs' }, h('a', { href: '#/changes', text: '← Changes' })),
      h('h1', {}, 'Change ', h('span', { class: 'mono', text: c.id })),
      verdict,
      section('Facts', header),
      section('Timeline', h('ol', { class: 'timeline', id: 'timeline' }, steps)),
      section('Ledger entries', h('p', { class: 'muted', text: `${p.entries.length} signed entries record this change.` }), entries, note, flagged(xs, 'ledger').length ? exceptionNotes(flagged(xs, 'ledger')) : null),
    ];
  }

  // ---------------------------------------------------------------------------------------
  // Ledger.

  // ---------------------------------------------------------------------------------------
  // Dashboard: the four keys of a period, what failed and what restored it, the open alerts.

  /** Seconds as "2 h 20 min", "30 min 0 s"; a dash for no figure. */
  function seconds(s) {
    return s === null || s === undefined ? '—' : duration(0, Number(s) * 1e9);
  }

  function percent(r) {
    return r === null || r === undefined ? '—' : `${Math.round(r * 1000) / 10} %`;
  }

  function card(id, label, value, note) {
    return h('div', { class: 'card', id },
      h('div', { class: 'card-label', text: label }),
      h('div', { class: 'card-value', text: value }),
      note ? h('div', { class: 'card-note muted', text: note }) : null);
  }

  /** Exceptions by code over the period's weeks: a row per code, a cell per week. */
  function exceptionsOverTime(byWeek) {
    const weeks = Object.keys(byWeek).sort();
    const codes = [...new Set(weeks.flatMap((w) => Object.keys(byWeek[w])))].sort();
    if (codes.length === 0) {
      return section('Exceptions by code, per week', h('p', { class: 'muted', id: 'no-exceptions', text: 'No production change requested in this period has an exception.' }));
    }
    const rows = codes.map((c) => h('tr', { 'data-code': c },
      td(codeBadge(c, null)),
      weeks.map((w) => {
        const n = byWeek[w][c] || 0;
        return td(n ? String(n) : '·', n ? 'num hot' : 'num muted');
      })));
    return section('Exceptions by code, per week',
      h('p', { class: 'muted', text: 'Production changes requested each week (starting Monday, UTC) that got each code.' }),
      table(['Code', ...weeks.map((w) => [w, 'num'])], rows, { class: 'exceptions-by-week' }));
  }

  /** Conductor reconciliation's place per server (GET /v1/conductor); nothing when none runs. */
  function reconciliation(status) {
    const servers = (status && status.servers) || [];
    if (!servers.length) return null;
    const rows = servers.map((s) => h('tr', { 'data-server': s.server },
      td(mono(s.server, 'full')),
      td(utc(s.imported_through_ns), 'nowrap'),
      td(badge(seconds(s.lag_seconds), s.lag_seconds > 900 ? 'warn' : 'ok'), 'num'),
      td(utc(s.moved_ns), 'nowrap')));
    return section('Conductor reconciliation',
      h('p', { class: 'muted', text: 'Every execution Conductor updated before the time shown is in the ledger; rounds and errors are counted in /metrics.' }),
      table(['Server', 'Imported through', ['Lag', 'num'], 'Cursor moved'], rows, { class: 'reconciliation' }));
  }

  async function dashboardPage(params) {
    document.title = 'Dashboard · changetrail';
    const def = defaultPeriod();
    const from = params.get('from') || def.from;
    const to = params.get('to') || def.to;
    // A cleared or invalid date falls back to the default period's end, not to a refused query.
    const q = new URLSearchParams({ from: dayStart(from) || dayStart(def.from), to: dayStart(to, true) || dayStart(def.to, true) });
    const [d, alerts, recon] = await Promise.all([
      call('GET', `/v1/delivery?${q}`),
      call('GET', '/v1/alerts?limit=1'),
      call('GET', '/v1/conductor'),
    ]);
    const k = d.all;
    const form = h('form', {
      class: 'filters', id: 'dashboard-period',
      onsubmit: (ev) => {
        ev.preventDefault();
        const p = new URLSearchParams({ from: $('d-from').value, to: $('d-to').value });
        location.hash = `#/dashboard?${p}`;
      },
    },
    h('label', { for: 'd-from', text: 'From (UTC)' }), h('input', { id: 'd-from', type: 'date', value: from }),
    h('label', { for: 'd-to', text: 'To (UTC)' }), h('input', { id: 'd-to', type: 'date', value: to }),
    h('button', { type: 'submit', class: 'button', text: 'Show' }));
    const serviceRows = Object.entries(d.services).map(([s, x]) => h('tr', { 'data-service': s },
      td(s), td(String(x.deployments), 'num'), td(seconds(x.lead_time_median_s), 'num'),
      td(`${x.failed} of ${x.landed}`, 'num'), td(percent(x.change_failure_rate), 'num'),
      td(seconds(x.time_to_restore_median_s), 'num')));
    const failureRows = d.failures.map((f) => h('tr', { 'data-change': f.change_id },
      td(changeLink(f.change_id)), td(f.service),
      td(badge(f.why === 'rolled_back' ? 'rolled back' : 'deploy failed', 'bad')),
      td(utc(f.failed_ns), 'nowrap'),
      td(f.restored_by ? [changeLink(f.restored_by), ` after ${seconds((f.restored_ns - f.failed_ns) / 1e9)}`] : h('span', { class: 'muted', text: 'not restored' }))));
    const openRows = alerts.open.slice(0, 10).map((o) => h('tr', { 'data-change': o.change_id },
      td(changeLink(o.change_id)), td(codeBadge(o.code, null)), td(o.since.replace('T', ' ').replace('Z', ' UTC'), 'nowrap')));
    return [
      h('h1', { text: 'Dashboard' }),
      h('p', { class: 'lede', text: `Production delivery from ${from} to ${to} (UTC), from the changes' signed evidence.` }),
      form,
      h('div', { class: 'cards', id: 'four-keys' },
        card('k-deployments', 'Deployments', String(k.deployments), `${(Math.round(k.deployments_per_day * 100) / 100)} a day`),
        card('k-lead', 'Lead time (median)', seconds(k.lead_time_median_s), k.lead_time_p90_s != null ? `90th percentile ${seconds(k.lead_time_p90_s)}` : null),
        card('k-cfr', 'Change failure rate', percent(k.change_failure_rate), `${k.failed} of ${k.landed} changes`),
        card('k-ttr', 'Time to restore (median)', seconds(k.time_to_restore_median_s), `${k.restored} restored of ${k.failed}`),
        card('k-alerts', 'Open alerts', String(alerts.open.length), null)),
      section('By service', serviceRows.length
        ? table(['Service', ['Deployments', 'num'], ['Lead time', 'num'], ['Failed', 'num'], ['Failure rate', 'num'], ['Time to restore', 'num']], serviceRows, { class: 'delivery' })
        : h('p', { class: 'muted', text: 'No production change landed in this period.' })),
      section('Failed changes and what restored them', failureRows.length
        ? table(['Change', 'Service', 'Why', 'Failed', 'Restored by'], failureRows, { class: 'failures' })
        : h('p', { class: 'muted', text: 'None.' })),
      exceptionsOverTime(d.exceptions_by_week),
      section('Open alerts', openRows.length
        ? [table(['Change', 'Code', 'Since'], openRows, { class: 'dashboard-alerts' }),
          h('p', {}, h('a', { href: '#/alerts', text: `All ${alerts.open.length} open, and every event →` }))]
        : h('p', { class: 'muted', text: 'No alert is open.' })),
      reconciliation(recon),
    ];
  }

  // ---------------------------------------------------------------------------------------
  // Alerts.

  /** A change id linking to its page (an unlinked deploy's subject names no change). */
  function changeLink(id) {
    if (id.startsWith('unlinked:')) return h('span', { class: 'mono', title: 'a production version no change deployed', text: id });
    return h('a', { href: `#/changes/${encodeURIComponent(id)}`, class: 'mono', text: id });
  }

  /** Where one alert event went: a badge per destination. */
  function deliveryBadges(ds) {
    if (!ds || ds.length === 0) return h('span', { class: 'muted', text: 'no destination' });
    const kinds = { delivered: 'ok', pending: 'warn', claimed: 'neutral', refused: 'bad', unrecorded: 'bad' };
    return h('span', { class: 'badges' }, ds.map((d) => badge(
      `${d.destination}: ${d.state}`,
      kinds[d.state] || 'neutral',
      d.state === 'delivered'
        ? `recorded by entry ${d.delivered_seq}`
        : `${d.attempts} attempt(s)${d.last_error ? `; last: ${d.last_error}` : ''}`,
    )));
  }

  async function alertsPage() {
    document.title = 'Alerts · changetrail';
    const list = await call('GET', '/v1/alerts?limit=200');
    const openRows = list.open.map((o) => h('tr', { 'data-change': o.change_id },
      td(changeLink(o.change_id)),
      td(codeBadge(o.code, null)),
      td(o.since.replace('T', ' ').replace('Z', ' UTC'), 'nowrap'),
      td(String(o.raised_seq), 'num')));
    const eventRows = list.alerts.map((a) => h('tr', { 'data-seq': String(a.entry_seq), class: a.status },
      td(a.time.replace('T', ' ').replace('Z', ' UTC'), 'nowrap'),
      td(badge(a.status, a.status === 'firing' ? 'bad' : 'ok')),
      td(changeLink(a.change_id)),
      td(a.erased
        ? h('span', { class: 'muted', text: 'erased' })
        : h('span', { class: 'badges' }, a.codes.map((c) => codeBadge(c.code, c.evidence)))),
      td([a.service, a.version, a.environment].filter(Boolean).join(' · ') || '—'),
      td(deliveryBadges(a.deliveries)),
      td(String(a.entry_seq), 'num')));
    return [
      h('h1', { text: 'Alerts' }),
      h('p', { class: 'lede', text: 'Production changes\' exception codes, raised once per change and code into the ledger (alert.raised), resolved when the evidence no longer shows them (alert.resolved), and delivered to every configured destination (alert.delivered).' }),
      section(`Open now (${list.open.length})`,
        list.open.length
          ? table(['Change', 'Code', 'Since', ['Raised by entry', 'num']], openRows, { class: 'open-alerts' })
          : h('p', { class: 'muted', id: 'no-open-alerts', text: 'No alert is open.' })),
      section(`History (${list.total})`,
        list.total
          ? table(['Time', 'Status', 'Change', 'Codes', 'Service', 'Delivered to', ['Entry', 'num']], eventRows, { class: 'alerts' })
          : h('p', { class: 'muted', text: 'No alert has been raised. Alerts are raised when [alerts] names a destination.' }),
        list.total > list.alerts.length
          ? h('p', { class: 'muted', text: `The newest ${list.alerts.length} of ${list.total} are shown; GET /v1/alerts?change_id=… narrows the list.` })
          : null),
    ];
  }

  async function ledgerPage() {
    document.title = 'Ledger · changetrail';
    const [cp, keys, recon] = await Promise.all([
      call('GET', '/v1/ledger/checkpoint').catch((e) => (e.status === 404 ? null : Promise.reject(e))),
      call('GET', '/v1/ledger/keys'),
      call('GET', '/v1/conductor'),
    ]);
    const checkpoint = cp
      ? [facts([
        ['Size', `${cp.size} entries`],
        ['Root', mono(cp.root, 'full')],
        ['Signed', utc(cp.created_ns)],
        ['Key', mono(cp.key_id)],
        // null: no tlog-policy is configured, so "witnessed" means nothing here.
        cp.witnessed == null ? null : ['Witnessed', cp.witnessed
          ? h('span', { class: 'badge ok', id: 'checkpoint-witnessed', text: `witnessed (${cp.cosignatures.length} cosignatures)` })
          : h('span', { class: 'badge bad', id: 'checkpoint-witnessed', text: 'unwitnessed: lacks the policy\'s quorum of cosignatures' })],
      ]), h('pre', { class: 'note', id: 'checkpoint-note', text: cp.note })]
      : h('p', { class: 'muted', text: 'No checkpoint has been signed yet.' });
    const keyRows = keys.keys.map((k) => h('tr', { class: k.key_id === keys.current_key_id ? 'current' : null },
      td(mono(k.key_id)),
      td(mono(k.vkey, 'wide')),
      td(String(k.from_seq), 'num'),
      td(k.to_seq === null ? h('span', {}, badge('current', 'ok')) : String(k.to_seq), 'num'),
      td(k.rotation_seq === null || k.rotation_seq === undefined ? h('span', { class: 'muted', text: 'genesis' }) : `entry ${k.rotation_seq}`, 'num')));

    const result = h('div', { id: 'verify-result', 'aria-live': 'polite' });
    const button = h('button', { type: 'button', class: 'button primary', id: 'verify', text: 'Verify now' });
    button.addEventListener('click', async () => {
      button.disabled = true;
      button.textContent = 'Verifying…';
      result.setAttribute('aria-busy', 'true');
      clear(result).append(h('p', { class: 'muted', text: 'Reading every entry and checking every signature…' }));
      try {
        const v = await call('POST', '/v1/ledger/verify');
        append(clear(result), [verification(v)]);
      } catch (e) {
        const busy = e instanceof HttpError && e.status === 503;
        append(clear(result), [busy
          ? panel('warn', 'A verification is already running', h('p', { text: `${e.message}. Try again in a moment.` }))
          : errorPanel(e)]);
      } finally {
        result.removeAttribute('aria-busy');
        button.disabled = false;
        button.textContent = 'Verify now';
      }
    });
    return [
      h('h1', { text: 'Ledger' }),
      h('p', { class: 'lede' }, 'Origin ', mono(keys.origin, 'full')),
      section('Latest checkpoint', checkpoint),
      section('Signing keys and rotations',
        table(['Key id', 'Verification key', ['From entry', 'num'], ['To entry', 'num'], ['Rotation', 'num']], keyRows, { class: 'keys' })),
      section('Verify',
        h('p', { text: 'Runs the verifier over every entry the latest checkpoint covers, pinned to the ledger\'s first key: signatures, hash chain, Merkle tree, checkpoints and the stored data.' }),
        button, result),
      reconciliation(recon),
    ];
  }

  function verification(v) {
    const s = v.summary;
    const head = panel(v.ok ? 'ok' : 'bad', v.ok ? 'Passed' : 'Failed',
      h('p', { class: 'verdict', id: 'verdict', text: v.verdict }),
      facts([
        ['Entries', `${s.entries}${s.first_seq != null ? ` (${s.first_seq}–${s.last_seq})` : ''}`],
        ['Signatures checked', String(s.signatures)],
        ['Checkpoints valid', `${s.checkpoints_valid} of ${s.checkpoints}`],
        ['Newest checkpoint', s.newest_size != null ? `size ${s.newest_size}` : null],
        ['Keys', String(s.keys)],
        s.redacted ? ['Erased payloads', String(s.redacted)] : null,
        s.uncovered ? ['Not yet covered', `${s.uncovered} newer entries (checked once a checkpoint covers them)`] : null,
        ['Took', `${v.elapsed_ms} ms`],
      ]));
    const findings = v.findings.length
      ? table(['Class', ['Seq', 'num'], 'Detail'], v.findings.map((f) => h('tr', {},
        td(badge(f.class, f.class === 'REDACTED' || f.class === 'UNPINNED' ? 'neutral' : 'bad')),
        td(f.seq === null || f.seq === undefined ? '—' : String(f.seq), 'num'),
        td(f.detail))), { class: 'findings', caption: 'Findings' })
      : h('p', { class: 'muted', id: 'no-findings', text: 'No findings.' });
    const suppressed = Object.entries(v.suppressed || {});
    return [head, findings, suppressed.length
      ? h('p', { class: 'muted', text: `Not listed (over the per-class cap): ${suppressed.map(([c, n]) => `${c} ${n}`).join(', ')}` })
      : null];
  }

  // ---------------------------------------------------------------------------------------
  // Reports.

  function filenameOf(r, fallback) {
    const cd = r.headers.get('Content-Disposition') || '';
    const m = /filename="?([^";]+)"?/.exec(cd);
    return m ? m[1] : fallback;
  }

  function reportsPage() {
    document.title = 'Reports · changetrail';
    const status = h('div', { id: 'report-status', 'aria-live': 'polite' });
    const button = h('button', { type: 'submit', class: 'button primary', id: 'build', text: 'Build and download' });
    const field = (name, label, input, help) => h('div', { class: 'field' },
      h('label', { for: `r-${name}`, text: label }), input,
      help ? h('p', { class: 'help', text: help }) : null);
    const form = h('form', {
      class: 'report-form', id: 'report-form',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const d = new FormData(ev.target);
        const body = { from: String(d.get('from')), to: String(d.get('to')), format: String(d.get('format')) };
        for (const k of ['environment', 'service']) {
          const v = String(d.get(k) || '').trim();
          if (v) body[k] = v;
        }
        const sample = String(d.get('sample') || '').trim();
        const seed = String(d.get('seed') || '').trim();
        if (Boolean(sample) !== Boolean(seed)) {
          clear(status).append(panel('bad', 'Sample size and seed go together', h('p', { text: 'Give both to draw a sample (the seed makes it reproducible), or neither.' })));
          return;
        }
        if (sample) {
          body.sample = Number(sample);
          body.seed = seed;
        }
        button.disabled = true;
        button.textContent = 'Building…';
        status.setAttribute('aria-busy', 'true');
        clear(status).append(h('p', { class: 'muted', text: 'Building the report against the newest checkpoint…' }));
        try {
          const r = await call('POST', '/v1/reports/soc2', { body, raw: true, accept: 'application/zip, application/x-tar' });
          const blob = await r.blob();
          const name = filenameOf(r, `changetrail-soc2.${body.format}`);
          const url = URL.createObjectURL(blob);
          const a = h('a', { href: url, download: name, hidden: true });
          document.body.append(a);
          a.click();
          a.remove();
          setTimeout(() => URL.revokeObjectURL(url), 60000);
          clear(status).append(panel('ok', 'Report downloaded',
            h('p', {}, h('span', { class: 'mono', id: 'report-name', text: name }), ` · ${(blob.size / 1024).toFixed(1)} KiB`),
            h('p', { class: 'muted', text: 'Check it with: changetrail verify-report DIR --trusted-key VKEY' })));
        } catch (e) {
          let p;
          if (e instanceof HttpError && e.status === 400) p = panel('bad', 'The report cannot be built with these settings', h('p', { text: e.message }));
          else if (e instanceof HttpError && e.status === 503) p = panel('warn', 'Not now', h('p', { text: `${e.message}. Try again in a moment.` }));
          else p = errorPanel(e);
          append(clear(status), [p]);
        } finally {
          status.removeAttribute('aria-busy');
          button.disabled = false;
          button.textContent = 'Build and download';
        }
      },
    },
    h('div', { class: 'form-grid' },
      field('from', 'From (UTC)', h('input', { id: 'r-from', name: 'from', type: 'date', required: true })),
      field('to', 'To (UTC, inclusive)', h('input', { id: 'r-to', name: 'to', type: 'date', required: true })),
      field('environment', 'Environment', h('input', { id: 'r-environment', name: 'environment', type: 'text', placeholder: 'all production' })),
      field('service', 'Service', h('input', { id: 'r-service', name: 'service', type: 'text', placeholder: 'all' })),
      field('sample', 'Sample size', h('input', { id: 'r-sample', name: 'sample', type: 'number', min: '1', step: '1', inputmode: 'numeric' }), 'Optional, with a seed.'),
      field('seed', 'Seed', h('input', { id: 'r-seed', name: 'seed', type: 'text', autocomplete: 'off' }), 'Draws the same sample every time.'),
      field('format', 'Format', h('select', { id: 'r-format', name: 'format' },
        h('option', { value: 'zip', text: 'zip', selected: true }), h('option', { value: 'tar', text: 'tar' })))),
    h('div', { class: 'actions' }, button));
    return [
      h('h1', { text: 'Reports' }),
      h('p', { class: 'lede', text: 'The SOC 2 change-management report for a period: population, exceptions, controls and sample, with a manifest signed by the ledger key.' }),
      form,
      status,
    ];
  }

  // ---------------------------------------------------------------------------------------
  // Tokens.

  async function tokensPage() {
    document.title = 'Tokens · changetrail';
    const list = await call('GET', '/v1/admin/tokens');
    const rows = list.map((t) => h('tr', { class: t.revoked_ns ? 'revoked' : null },
      td(mono(t.id, 'short')),
      td(t.name),
      td(badge(t.role, 'neutral')),
      td(utc(t.created_ns), 'nowrap'),
      td(t.revoked_ns ? h('span', {}, badge('revoked', 'bad'), ' ', utc(t.revoked_ns)) : badge('active', 'ok'))));
    return [
      h('h1', { text: 'Tokens' }),
      h('p', { class: 'lede', text: 'API tokens by id, name and role. Secrets are shown once, when a token is created (changetrail tokens create), and never again.' }),
      table(['Id', 'Name', 'Role', 'Created', 'Status'], rows, { class: 'tokens' }),
    ];
  }

  // ---------------------------------------------------------------------------------------
  // Start.

  async function start() {
    $('signout').addEventListener('click', () => signOut());
    // Paper has no "expand": print every collapsed group (retries, the checkpoint note) open.
    window.addEventListener('beforeprint', () => {
      for (const d of document.querySelectorAll('details')) d.open = true;
    });
    window.addEventListener('hashchange', route);
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (!saved) {
      renderSignIn();
      return;
    }
    try {
      const s = await call('GET', '/v1/session', { token: saved });
      if (!s.pages || s.pages.length === 0) throw new HttpError(403, 'no pages');
      state.token = saved;
      state.session = s;
      route();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      renderSignIn(e.status === 401 ? 'Your token is no longer accepted. Sign in again.' : null, 'bad');
    }
  }

  start();
})();
