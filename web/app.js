// Perch's example frontend: a customer's payroll connections (Finch's implementation guide,
// "connections page"). Plain JS with no build step; every request goes to Perch's API with the
// customer's JWT, and the customer is whatever that token says — never something the page sends.
//
// Which API: the page's own origin (the local stack serves both), or the `perch-api` meta tag's
// content when a deployed copy is hosted elsewhere. Which token: the local development issuer
// (`POST /dev/token`, only on the local stack); a real app plugs in its identity provider by
// defining `window.perchToken = async () => "<JWT>"` before this script runs.
'use strict';

(() => {
  const API = (document.querySelector('meta[name="perch-api"]')?.content || location.origin).replace(/\/$/, '');
  const TOKEN_KEY = 'perch.token';
  const CUSTOMER_KEY = 'perch.customer';
  const $ = (id) => document.getElementById(id);

  // ---- talking to Perch -------------------------------------------------------------------

  /** An answer from Perch that was not a success, already put into words for a person. */
  class ApiError extends Error {
    constructor(status, problem) {
      super(explain(status, problem));
      this.status = status;
      this.problem = problem;
    }
  }

  // Perch answers errors as RFC 9457 problems (`code`, `detail`); API Gateway's own 401 is
  // `{message}`. The detail is written for the API's users; these are for the page's.
  function explain(status, problem) {
    const code = problem && problem.code;
    if (status === 401) return 'Your sign-in has expired. Sign in again to continue.';
    if (status === 404) return 'That connection or entity no longer exists. The list has been refreshed.';
    if (code === 'finch_rate_limited' || status === 429) return 'Finch is busy right now. Wait a minute and try again.';
    if (status === 409) return (problem && problem.detail) || 'Something else is changing this connection. Try again in a moment.';
    if (status === 502 || status === 504) return 'Finch did not answer properly. Nothing was changed; try again in a minute.';
    if (status === 503) return 'Perch is temporarily unavailable. Nothing was changed; try again in a minute.';
    if (status >= 500) return 'Something went wrong on our side. Nothing was changed; try again, and contact support if it keeps happening'
      + (problem && problem.request_id ? ` (reference ${problem.request_id}).` : '.');
    return (problem && problem.detail) || `The request was refused (HTTP ${status}).`;
  }

  async function api(method, path, body) {
    const token = await currentToken();
    let res;
    try {
      res = await fetch(API + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch {
      throw new ApiError(0, { detail: 'Perch could not be reached. Check your connection and try again.' });
    }
    if (res.status === 204) return null;
    const data = await res.json().catch(() => null);
    if (!res.ok) {
      if (res.status === 401) signOut();
      throw new ApiError(res.status, data);
    }
    return data;
  }

  async function currentToken() {
    if (typeof window.perchToken === 'function') return window.perchToken();
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) throw new ApiError(401, null);
    return token;
  }

  // ---- sign-in (local development issuer) ---------------------------------------------------

  async function signIn(customer) {
    const res = await fetch(`${API}/dev/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ customer_id: customer }),
    });
    if (!res.ok) throw new Error('The local sign-in is not available on this server.');
    const { token } = await res.json();
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(CUSTOMER_KEY, customer);
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(CUSTOMER_KEY);
    showLogin();
  }

  function showLogin() {
    $('app').hidden = true;
    $('who').hidden = true;
    $('login').hidden = false;
    $('customer').focus();
  }

  // ---- the connections ----------------------------------------------------------------------

  let connections = [];
  let nextCursor = null;

  async function load(more = false) {
    const query = more && nextCursor ? `?cursor=${encodeURIComponent(nextCursor)}` : '';
    const page = await api('GET', `/connections${query}`);
    connections = more ? connections.concat(page.connections) : page.connections;
    nextCursor = page.next_cursor;
    render();
  }

  // Finch's statuses (an open set) as the five badges a person needs to tell apart.
  function badge(status) {
    if (status === 'connected') return ['connected', 'Connected'];
    if (status === 'reauth') return ['reauth', 'Needs reconnect'];
    if (status === 'pending' || status === 'processing') return ['pending', 'Pending'];
    if (status === 'disconnected' || status === 'disconnecting') return ['disconnected', 'Disconnected'];
    if (status.startsWith('error')) return ['error', 'Error'];
    return ['pending', status];
  }

  const STATUS_HELP = {
    reauth: 'The employer must log in to their payroll system again (a password or permission changed).',
    pending: 'Finch is still setting up this connection; the provider may need the employer to act.',
    error_no_account_setup: 'The employer has not finished setting up their account with the provider.',
    error_permissions: 'The account used to connect lacks permissions at the provider.',
    disconnected: 'Finch reports the employer ended this connection; disconnect to destroy the stored token.',
  };

  const el = (tag, props = {}, ...children) => {
    const node = Object.assign(document.createElement(tag), props);
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  };

  const when = (iso) => (iso ? new Date(iso).toLocaleString() : 'not yet');

  function render() {
    const body = $('connections').tBodies[0];
    body.replaceChildren();
    for (const c of connections) {
      const [kind, label] = badge(c.status);
      const tags = (items) => el('div', { className: 'tags' }, ...items.map((p) => el('span', { className: 'tag', textContent: p })));
      const actions = el('td', { className: 'row-actions' });
      if (c.status === 'reauth' || c.status.startsWith('error')) {
        actions.append(el('button', { type: 'button', className: 'primary', textContent: 'Reconnect', onclick: (e) => reconnect(c, e.target) }), ' ');
      }
      // Finch reporting `disconnected` does not destroy the token; disconnecting here does.
      if (badge(c.status)[0] !== 'disconnected') {
        actions.append(el('button', { type: 'button', textContent: 'Data', onclick: (e) => busy(e.target, () => openData(c)) }), ' ');
      }
      if (c.status !== 'disconnecting') {
        actions.append(el('button', { type: 'button', className: 'danger', textContent: 'Disconnect', onclick: (e) => disconnect(c, e.target) }));
      }
      const help = STATUS_HELP[c.status] || STATUS_HELP[kind];
      const row = el('tr', {},
        el('td', {}, el('strong', { textContent: c.provider_id }), el('small', { textContent: c.connection_id })),
        el('td', { className: 'employer' }, el('span', { textContent: c.company_name || '—' }), el('small', { textContent: employer(c) })),
        el('td', {}, el('span', { className: `badge ${kind}`, textContent: label, title: c.status }), help ? el('small', { textContent: help }) : null),
        el('td', {}, tags(c.products)),
        el('td', {}, entities(c)),
        el('td', { textContent: when(c.checked_at) }),
        actions,
      );
      row.dataset.connectionId = c.connection_id;
      row.dataset.status = c.status;
      body.append(row);
    }
    $('connections').hidden = connections.length === 0;
    $('empty').hidden = connections.length !== 0;
    $('more').hidden = !nextCursor;
    const live = connections.some((c) => badge(c.status)[0] !== 'disconnected');
    $('connect').textContent = live ? 'Connect another payroll system' : 'Connect a payroll system';
  }

  // Who the employer is, in one line: how it is connected and where.
  function employer(c) {
    const how = c.assisted ? 'Assisted' : 'Automated';
    const method = c.authentication_method && c.authentication_method !== 'assisted' ? ` (${c.authentication_method})` : '';
    const parts = [`${how}${method}`];
    if (c.client_type && c.client_type !== 'production') parts.push(c.client_type);
    if (c.customer_email) parts.push(c.customer_email);
    return parts.join(' · ');
  }

  // The entities by name, each with its status when the connection has several, and a way
  // to disconnect one (the last one is the connection: its own Disconnect button does that).
  function entities(c) {
    if (!c.entities || c.entities.length === 0) return el('span', { textContent: '—' });
    const live = c.entities.filter((e) => e.status !== 'disconnected');
    const list = el('ul', { className: 'entities' });
    for (const e of c.entities) {
      const name = e.name || e.entity_id.slice(0, 8);
      const item = el('li', {}, el('span', { textContent: name, title: e.source_id || e.entity_id }));
      item.dataset.entityId = e.entity_id;
      item.dataset.status = e.status;
      if (c.entities.length > 1) {
        const [kind, label] = badge(e.status);
        item.append(' ', el('span', { className: `badge small ${kind}`, textContent: label, title: e.status }));
        if (e.status !== 'disconnected' && live.length > 1 && c.status !== 'disconnecting') {
          item.append(' ', el('button', {
            type: 'button', className: 'link danger', textContent: 'Disconnect',
            onclick: (ev) => disconnectEntity(c, e, ev.target),
          }));
        }
      }
      list.append(item);
    }
    return list;
  }

  // ---- A connection's data: its sync state, its employees, a person's pay ------------------------

  let shown = null;
  let employeesCursor = null;
  let employeesQuery = '';

  const SYNC_STATES = {
    not_started: 'Not started', queued: 'Queued', waiting_for_finch: 'Waiting for Finch', syncing: 'Syncing',
    current: 'Current', needs_reauth: 'Needs reconnect', missing_scope: 'Missing permission', error: 'Error',
    backfilling: 'Backfilling',
  };
  const SYNC_BADGE = { current: 'connected', needs_reauth: 'reauth', error: 'error', missing_scope: 'reauth' };

  const stateBadge = (state) => el('span', { className: `badge ${SYNC_BADGE[state] || 'pending'}`, textContent: SYNC_STATES[state] || state, title: state });

  // Cents in a currency, as a person reads money; an unknown currency code shown as given.
  function money(amount, currency) {
    if (amount === null || amount === undefined) return '—';
    try {
      return (amount / 100).toLocaleString(undefined, { style: 'currency', currency: (currency || 'usd').toUpperCase() });
    } catch {
      return `${(amount / 100).toFixed(2)} ${currency || ''}`.trim();
    }
  }

  async function openData(c) {
    shown = c;
    $('data-name').textContent = c.company_name || c.provider_id;
    $('app').hidden = true;
    $('data').hidden = false;
    $('employee-q').value = '';
    await Promise.all([loadSync(), loadEmployees()]);
  }

  function closeData() {
    clearTimeout(watching);
    shown = null;
    $('data').hidden = true;
    $('app').hidden = false;
  }

  // While a sync is queued or running, the state is read again every few seconds; when it
  // settles the employees are read again too (the first sync brings them).
  let watching = null;

  async function loadSync() {
    const view = await api('GET', `/connections/${encodeURIComponent(shown.connection_id)}/sync`);
    renderSync(view);
  }

  function watch(view) {
    clearTimeout(watching);
    const moving = view.entities.some((e) => ['queued', 'syncing'].includes(e.state) || e.pay?.state === 'backfilling');
    if (!moving) return;
    const id = shown.connection_id;
    watching = setTimeout(async () => {
      if (!shown || shown.connection_id !== id) return;
      try {
        const next = await api('GET', `/connections/${encodeURIComponent(id)}/sync`);
        if (!shown || shown.connection_id !== id) return;
        renderSync(next);
        if (!next.entities.some((e) => ['queued', 'syncing'].includes(e.state))) await loadEmployees();
      } catch (e) {
        notify('error', e.message);
      }
    }, 2000);
  }

  function renderSync(view) {
    const box = $('sync');
    box.replaceChildren();
    for (const e of view.entities) {
      const entity = (shown.entities || []).find((x) => x.entity_id === e.entity_id);
      const rows = [
        ['Organization', stateBadge(e.state)],
        e.reason ? ['Why', e.reason] : null,
        e.products ? ['Not granted', e.products.join(', ')] : null,
        ['Last synced', e.last_success ? when(e.last_success.finished_at) : 'not yet'],
        e.last_success ? ['Last changes', `${e.last_success.counts.added} added, ${e.last_success.counts.updated} updated, ${e.last_success.counts.removed} removed`] : null,
        e.progress ? ['In progress', `${e.progress.people_listed} people listed`] : null,
        ['Next', e.next_attempt_at ? when(e.next_attempt_at) : '—'],
      ];
      if (e.pay) {
        rows.push(['Pay history', stateBadge(e.pay.state)]);
        rows.push(['Pay periods', `${e.pay.pay_periods_done} of ${e.pay.pay_periods_total} (from ${e.pay.from})`]);
        rows.push(['Pay statements', String(e.pay.pay_statements)]);
        if (e.pay.waiting_for_finch) rows.push(['Waiting for Finch', `${e.pay.waiting_for_finch} payment(s)`]);
        if (e.pay.products) rows.push(['Not granted', e.pay.products.join(', ')]);
      }
      const dl = el('dl');
      for (const r of rows.filter(Boolean)) dl.append(el('dt', { textContent: r[0] }), el('dd', {}, r[1]));
      const card = el('div', { className: 'card' }, el('h3', { textContent: entity?.name || e.entity_id }), dl);
      card.dataset.entityId = e.entity_id;
      card.dataset.state = e.state;
      if (e.pay) card.dataset.payState = e.pay.state;
      box.append(card);
    }
    watch(view);
  }

  async function loadEmployees(more = false) {
    const params = new URLSearchParams({ limit: '50' });
    if (employeesQuery) params.set('q', employeesQuery);
    if (more && employeesCursor) params.set('cursor', employeesCursor);
    const page = await api('GET', `/connections/${encodeURIComponent(shown.connection_id)}/employees?${params}`);
    const body = $('employees').tBodies[0];
    if (!more) body.replaceChildren();
    for (const e of page.employees) {
      const d = e.directory || {};
      const job = e.employment || {};
      const name = [d.first_name, d.last_name].filter(Boolean).join(' ') || e.individual_id;
      const tr = el('tr', {},
        el('td', {}, el('strong', { textContent: name })),
        el('td', { textContent: job.title || '—' }),
        el('td', { textContent: d.department?.name || '—' }),
        el('td', { textContent: d.is_active === false ? 'Left' : 'Active' }),
      );
      tr.dataset.individualId = e.individual_id;
      if (e.person_id) {
        tr.dataset.personId = e.person_id;
        tr.tabIndex = 0;
        tr.onclick = () => busy(null, () => openPerson(e.person_id, name));
        tr.onkeydown = (ev) => { if (ev.key === 'Enter') tr.onclick(); };
      }
      body.append(tr);
    }
    employeesCursor = page.next_cursor;
    const any = body.rows.length > 0;
    $('employees').hidden = !any;
    $('employees-empty').hidden = any;
    $('employees-empty').textContent = employeesQuery
      ? `No one whose name contains “${employeesQuery}”.`
      : 'No one yet: the first sync has not brought anyone in.';
    $('employees-more').hidden = !page.has_more;
  }

  async function openPerson(personId, name) {
    const p = await api('GET', `/people/${encodeURIComponent(personId)}`);
    $('person-name').textContent = name;
    const sources = $('person-sources');
    sources.replaceChildren();
    for (const s of p.sources) {
      const c = connections.find((x) => x.connection_id === s.connection_id);
      const how = s.rule ? ` · linked by ${s.rule.replaceAll('_', ' ')}` : '';
      const title = s.employment?.title || '';
      sources.append(el('li', { textContent: `${c ? c.provider_id : s.connection_id} · ${c?.company_name || ''}${title ? ` · ${title}` : ''}${how}` }));
    }
    const body = $('person-pay').tBodies[0];
    body.replaceChildren();
    for (const line of p.pay) {
      const c = connections.find((x) => x.connection_id === line.connection_id);
      const st = line.statement || {};
      const period = line.pay_period ? `${line.pay_period.start_date} – ${line.pay_period.end_date}` : '—';
      body.append(el('tr', {},
        el('td', { textContent: line.pay_date || '—' }),
        el('td', { textContent: period }),
        el('td', { textContent: c ? c.provider_id : line.connection_id }),
        el('td', { className: 'money', textContent: money(st.gross_pay?.amount, st.gross_pay?.currency) }),
        el('td', { className: 'money', textContent: money(st.net_pay?.amount, st.net_pay?.currency) }),
      ));
    }
    $('person-pay').hidden = p.pay.length === 0;
    $('person-no-pay').hidden = p.pay.length !== 0;
    $('person-totals').textContent = p.pay_totals
      .map((t) => `${t.statements} statement(s): ${money(t.gross_pay, t.currency)} gross, ${money(t.net_pay, t.currency)} net${t.incomplete ? ` (${t.incomplete} without an amount)` : ''}`)
      .join(' · ');
    $('person').showModal();
  }

  // ---- Finch Connect ------------------------------------------------------------------------

  function options() {
    const form = $('connect-options');
    return {
      flow: form.querySelector('input[name="flow"]:checked').value,
      products: [...form.querySelectorAll('input[name="products"]:checked')].map((i) => i.value),
    };
  }

  async function connect(button) {
    const { flow, products } = options();
    if (products.length === 0) return notify('error', 'Choose at least one kind of data to request.');
    const live = connections.some((c) => badge(c.status)[0] !== 'disconnected');
    // A customer with a connection already connects another provider or entity set as an
    // additional Finch customer; without `additional`, Finch would re-authenticate the first.
    await busy(button, async () => openConnect(await api('POST', '/connect/sessions', { flow, products, additional: live })));
  }

  async function reconnect(connection, button) {
    const { flow } = options();
    await busy(button, async () => openConnect(await api('POST', `/connections/${encodeURIComponent(connection.connection_id)}/reauthenticate`, { flow })));
  }

  let finchConnect = null;
  let finchConnectOrigin = null;

  function openConnect(session) {
    if (session.flow === 'redirect') {
      location.assign(session.connect_url);
      return;
    }
    // The SDK is pointed at whichever Connect the session is on (Finch's, or the emulator's
    // locally) and accepts messages only from that origin.
    const origin = new URL(session.connect_url).origin;
    if (!finchConnect || finchConnectOrigin !== origin) {
      if (finchConnect) finchConnect.destroy();
      finchConnect = window.FinchConnect.initialize({
        apiConfig: { connectUrl: origin },
        onSuccess: ({ code, state }) => finish(code, state),
        onError: ({ errorMessage }) => notify('error', `Finch Connect stopped: ${errorMessage}`),
        onClose: () => notify('info', 'Finch Connect was closed before the payroll system was connected.'),
      });
      finchConnectOrigin = origin;
    }
    finchConnect.open({ sessionId: session.session_id, state: session.state });
  }

  async function finish(code, state) {
    try {
      const { connection, outcome } = await api('POST', '/connect/callback', { code, state });
      notify('ok', describe(connection, outcome));
    } catch (e) {
      notify('error', e.message);
    }
    await refresh();
  }

  function describe(connection, outcome) {
    const who = connection ? `${connection.provider_id}${connection.company_name ? ` (${connection.company_name})` : ''}` : 'The payroll system';
    if (outcome === 'reauthenticated') return `${who} is reconnected.`;
    if (outcome === 'already_connected') return `${who} was already connected.`;
    if (outcome === 'duplicate') return `${who === 'The payroll system' ? 'This employer' : who} was already connected with this payroll system; the existing connection is kept.`;
    return `${who} is connected.`;
  }

  // ---- disconnect ---------------------------------------------------------------------------

  const WHOLE = 'Perch asks Finch to revoke access and then destroys the stored token. To read this payroll data again, '
    + 'the employer will have to connect from the start.';

  function disconnect(connection, button) {
    const dialog = $('confirm');
    $('confirm-name').textContent = connection.company_name || connection.provider_id;
    $('confirm-what').textContent = WHOLE;
    dialog.returnValue = '';
    dialog.onclose = async () => {
      if (dialog.returnValue !== 'disconnect') return;
      await busy(button, async () => {
        await api('DELETE', `/connections/${encodeURIComponent(connection.connection_id)}`);
        notify('ok', `${connection.company_name || connection.provider_id} is disconnected; its token is destroyed.`);
        await load();
      });
    };
    dialog.showModal();
  }

  function disconnectEntity(connection, entity, button) {
    const dialog = $('confirm');
    const name = entity.name || entity.entity_id;
    $('confirm-name').textContent = name;
    $('confirm-what').textContent = `Perch asks Finch to stop sharing ${name}'s payroll data. `
      + `The connection stays for its other entities; to add ${name} back, the employer connects it again.`;
    dialog.returnValue = '';
    dialog.onclose = async () => {
      if (dialog.returnValue !== 'disconnect') return;
      await busy(button, async () => {
        const path = `/connections/${encodeURIComponent(connection.connection_id)}/entities/${encodeURIComponent(entity.entity_id)}`;
        await api('DELETE', path);
        notify('ok', `${name} is disconnected; ${connection.company_name || connection.provider_id} stays connected for the rest.`);
        await load();
      });
    };
    dialog.showModal();
  }

  // ---- plumbing -----------------------------------------------------------------------------

  function notify(kind, text) {
    const banner = $('banner');
    banner.className = `banner ${kind === 'error' ? 'error' : 'ok'}`;
    banner.dataset.kind = kind;
    banner.textContent = text;
    banner.hidden = false;
  }

  async function busy(button, work) {
    if (button) button.disabled = true;
    try {
      await work();
    } catch (e) {
      notify('error', e.message);
      if (e.status === 404) await refresh();
    } finally {
      if (button) button.disabled = false;
    }
  }

  async function refresh() {
    try {
      await load();
    } catch (e) {
      notify('error', e.message);
    }
  }

  // Why a redirect flow failed, in words (the callback's `reason`; README, "Callback outcomes").
  const REASONS = {
    consent_denied: 'The payroll connection was declined in Finch Connect, so nothing was connected.',
    connect_failed: 'Finch Connect ended without connecting the payroll system.',
    state_invalid: 'That Connect link has expired or was already used.',
    code_invalid: 'Finch did not accept the authorization, which may have expired or been used already.',
    invalid_query: 'The link back from Finch Connect was malformed.',
    exchange_in_progress: 'This connection is still being completed; it will appear in a moment.',
    finch_unavailable: 'Finch was unavailable while completing the connection.',
    finch_unreachable: 'Finch could not be reached while completing the connection.',
    finch_timeout: 'Finch took too long to answer while completing the connection.',
    finch_rate_limited: 'Finch is busy right now.',
    service_unavailable: 'Perch was busy while completing the connection.',
    connection_disconnected: 'That connection was disconnected while it was being reconnected.',
    configuration_error: 'Perch is not set up correctly for Finch; our team has been alerted.',
  };
  // What the employer can do next (the callback's `next`).
  const NEXT = {
    retry: 'Please try again in a moment.',
    restart: 'Please connect again.',
    contact_support: 'Please contact support if it persists.',
  };

  // Back from the redirect flow: the callback sent the browser here with what happened.
  function returnedFromFinch() {
    const q = new URLSearchParams(location.search);
    if (!q.has('outcome')) return;
    if (q.get('outcome') === 'error') {
      const why = REASONS[q.get('reason')] || 'The payroll system could not be connected.';
      const next = NEXT[q.get('next')] || NEXT.restart;
      const ref = q.get('request_id') ? ` (reference ${q.get('request_id')})` : '';
      notify('error', `${why} ${next}${ref}`);
    } else {
      notify('ok', describe(null, q.get('outcome')));
    }
    history.replaceState(null, '', location.pathname);
  }

  async function localStack() {
    const res = await fetch(`${API}/dev/config`).catch(() => null);
    if (!res || !res.ok) return null;
    return res.json();
  }

  async function start() {
    returnedFromFinch();
    const dev = await localStack();
    if (dev) {
      $('emulator-link').href = dev.finch_dashboard_url;
      $('dev').hidden = false;
      $('sweep').onclick = (e) => busy(e.target, async () => {
        const res = await fetch(`${API}/dev/sweep`, { method: 'POST' });
        const out = await res.json().catch(() => null);
        if (!res.ok) throw new ApiError(res.status, out);
        notify('ok', `Status check done: ${out.checked} checked, ${out.changed} changed.`);
        await load();
      });
    }
    $('login-form').onsubmit = async (e) => {
      e.preventDefault();
      if (!$('customer').reportValidity()) return;
      try {
        await signIn($('customer').value.trim());
        await showApp();
      } catch (err) {
        notify('error', err.message);
      }
    };
    $('sign-out').onclick = signOut;
    $('refresh').onclick = (e) => busy(e.target, () => load());
    $('connect').onclick = (e) => connect(e.target);
    $('more').onclick = (e) => busy(e.target, () => load(true));
    $('data-back').onclick = closeData;
    $('sync-now').onclick = (e) => busy(e.target, async () => {
      const out = await api('POST', `/connections/${encodeURIComponent(shown.connection_id)}/sync`, {});
      renderSync(out);
      notify('ok', out.queued ? 'A sync is queued.' : 'A sync is already queued or running.');
    });
    $('employee-search').onsubmit = (e) => {
      e.preventDefault();
      employeesQuery = $('employee-q').value.trim();
      busy(e.submitter, () => loadEmployees());
    };
    $('employees-more').onclick = (e) => busy(e.target, () => loadEmployees(true));
    // Coming back to the tab (say, from the emulator's dashboard) shows what changed.
    window.addEventListener('focus', () => { if (!$('app').hidden) refresh(); });
    if (typeof window.perchToken === 'function' || sessionStorage.getItem(TOKEN_KEY)) await showApp();
    else showLogin();
  }

  async function showApp() {
    $('login').hidden = true;
    $('app').hidden = false;
    const customer = sessionStorage.getItem(CUSTOMER_KEY);
    $('who').hidden = !customer;
    $('who-name').textContent = customer || '';
    await refresh();
  }

  start();
})();
