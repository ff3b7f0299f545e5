// The connections page in a real browser (Debian's Chromium, driven by playwright-core), against
// the local stack that scripts/browser-tests.sh starts: Perch (perch-local) on PERCH_URL, the
// Finch emulator on FINCH_URL, moto behind them. Each test signs in as a customer of its own,
// so the tests share the stack without seeing each other's connections.
//
// Screenshots of each step go to SCREENSHOT_DIR (the test command keeps them as artifacts).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';

const PERCH = required('PERCH_URL');
const FINCH = required('FINCH_URL');
const SHOTS = process.env.SCREENSHOT_DIR || 'screenshots';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Generous for a loaded 2-core CI machine; every wait is for something to appear, never a sleep.
const WAIT = 20_000;

function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} must be set (scripts/browser-tests.sh sets it)`);
  return v.replace(/\/$/, '');
}

let browser;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // As root on a machine whose network is closed: no sandbox, and none of Chromium's own
    // background connections (they would be refused, many at a time).
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
});

const customerName = (base) => `${base}-${randomBytes(4).toString('hex')}`;

/** A fresh browser context (its own sessionStorage) signed in as `customer`. */
async function signedIn(customer) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  await page.goto(PERCH + '/');
  await page.getByLabel('Customer').fill(customer);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#who-name', { hasText: customer }).waitFor();
  return { context, page, problems };
}

const rows = (page) => page.locator('#connections tbody tr');
const row = (page, id) => page.locator(`#connections tbody tr[data-connection-id="${id}"]`);
const banner = (page) => page.locator('#banner');

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Connects through the embedded flow: Finch's Connect SDK opens the emulator's page in its iframe. */
async function connectEmbedded(page, button = /Connect (a|another) payroll system/, provider = null) {
  await page.getByRole('button', { name: button }).click();
  const frame = page.frameLocator('#finch-connect-iframe');
  if (provider) await frame.getByLabel('Provider').fill(provider);
  await frame.getByRole('button', { name: /^(Connect|Reconnect)$/ }).click();
  // The SDK removes its iframe once Connect reports success.
  await page.locator('#finch-connect-iframe').waitFor({ state: 'detached' });
}

async function emulator(path, body) {
  const res = await fetch(FINCH + path, {
    method: body ? 'POST' : 'GET',
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  assert.ok(res.ok, `${path}: ${res.status}`);
  return res.json();
}

test('the whole story: connect, reauth flagged by Finch, reconnect, disconnect', async () => {
  const customer = customerName('acme');
  const { context, page, problems } = await signedIn(customer);
  await page.locator('#empty').waitFor();
  assert.match(await page.locator('#empty').innerText(), /No payroll system is connected yet/);
  await shot(page, '01-empty');

  // Connect (embedded flow, Finch's own SDK).
  await connectEmbedded(page);
  await banner(page).filter({ hasText: 'is connected' }).waitFor();
  await rows(page).first().waitFor();
  assert.equal(await rows(page).count(), 1);
  const id = await rows(page).first().getAttribute('data-connection-id');
  const first = row(page, id);
  assert.equal(await first.locator('.badge').innerText(), 'Connected');
  assert.match(await first.innerText(), /gusto/);
  for (const product of ['company', 'directory', 'individual', 'employment']) {
    assert.ok((await first.locator('.tag').allInnerTexts()).includes(product), `product ${product} shown`);
  }
  // Company name and the last check come from Finch's /introspect at the exchange.
  const company = (await emulator('/_emulator/connections')).find((c) => c.id === id).company_name;
  assert.match(await first.innerText(), new RegExp(company));
  // Never checked by the status sweep yet; on the local stack a button runs a round now.
  assert.equal(await first.locator('td').nth(5).innerText(), 'not yet');
  await page.getByRole('button', { name: 'Run the status check now' }).click();
  await banner(page).filter({ hasText: 'Status check done' }).waitFor();
  await first.locator('td').nth(5).filter({ hasNotText: 'not yet' }).waitFor();
  assert.match(await first.locator('td').nth(5).innerText(), /\d{1,2}:\d{2}/, 'last check is a time');
  await shot(page, '02-connected');

  // Finch flags the connection: a person does it on the emulator's dashboard, which sends Perch
  // the signed account.updated webhook.
  const dashboard = await context.newPage();
  dashboard.setDefaultTimeout(WAIT);
  await dashboard.goto(FINCH + '/_emulator/');
  const emuRow = dashboard.locator(`tr[data-connection-id="${id}"]`);
  await emuRow.getByRole('button', { name: 'Needs reauth' }).click();
  await emuRow.locator('.status', { hasText: 'reauth' }).waitFor();
  await shot(dashboard, '03-emulator-dashboard');
  await dashboard.close();

  await page.bringToFront();
  await page.getByRole('button', { name: 'Refresh' }).click();
  await first.locator('.badge', { hasText: 'Needs reconnect' }).waitFor();
  assert.equal(await first.getAttribute('data-status'), 'reauth');
  assert.match(await first.innerText(), /must log in to their payroll system again/);
  await shot(page, '04-reauth');

  // Reconnect: a reauthentication session for the same connection, through the same SDK.
  await first.getByRole('button', { name: 'Reconnect' }).click();
  await page.frameLocator('#finch-connect-iframe').getByRole('button', { name: 'Reconnect' }).click();
  await page.locator('#finch-connect-iframe').waitFor({ state: 'detached' });
  await banner(page).filter({ hasText: 'is reconnected' }).waitFor();
  await first.locator('.badge', { hasText: 'Connected' }).waitFor();
  assert.equal(await rows(page).count(), 1, 'reconnecting keeps the same connection');
  await shot(page, '05-reconnected');

  // Disconnect, after a confirmation; keeping it first changes nothing.
  await first.getByRole('button', { name: 'Disconnect' }).click();
  await page.getByRole('button', { name: 'Keep it' }).click();
  assert.equal(await rows(page).count(), 1);
  await first.getByRole('button', { name: 'Disconnect' }).click();
  await shot(page, '06-confirm-disconnect');
  await page.locator('#confirm-disconnect').click();
  await banner(page).filter({ hasText: 'is disconnected' }).waitFor();
  await page.locator('#empty').waitFor();
  assert.equal(await rows(page).count(), 0);
  await shot(page, '07-disconnected');

  // Finch saw the disconnect: the emulator holds the connection as disconnected.
  assert.equal((await emulator('/_emulator/connections')).find((c) => c.id === id).disconnected, true);
  assert.deepEqual(problems, []);
  await context.close();
});

test('the redirect flow leaves for Finch Connect and comes back connected', async () => {
  const { context, page, problems } = await signedIn(customerName('globex'));
  await page.getByLabel(/Go to Finch and come back/).check();
  await page.getByRole('button', { name: 'Connect a payroll system' }).click();
  await page.waitForURL((u) => u.href.startsWith(FINCH + '/authorize'));
  await page.getByRole('button', { name: 'Connect' }).click();
  // Finch → Perch's GET /connect/callback → 302 back to the page, with no code or token in the URL.
  await page.waitForURL((u) => u.href.startsWith(PERCH + '/'));
  await banner(page).filter({ hasText: 'is connected' }).waitFor();
  await rows(page).first().waitFor();
  assert.equal(await rows(page).count(), 1);
  assert.equal(new URL(page.url()).search, '', 'the page drops the callback parameters from the address bar');
  assert.deepEqual(problems, []);
  await context.close();
});

test('a redirect flow that fails comes back to the page, which says why in words', async () => {
  const { context, page, problems } = await signedIn(customerName('declines'));
  const start = async () => {
    await page.getByLabel(/Go to Finch and come back/).check();
    await page.getByRole('button', { name: 'Connect a payroll system' }).click();
    await page.waitForURL((u) => u.href.startsWith(FINCH + '/authorize'));
  };
  // The employer declines at Finch Connect.
  await start();
  await page.getByRole('button', { name: 'Decline' }).click();
  await page.waitForURL((u) => u.href.startsWith(PERCH + '/'));
  await banner(page).filter({ hasText: 'was declined in Finch Connect' }).waitFor();
  assert.match(await banner(page).textContent(), /Please connect again/);
  assert.equal(new URL(page.url()).search, '', 'no reason or reference left in the address bar');
  await shot(page, '11-declined');
  // Finch fails at the code exchange: a temporary failure, told as one.
  await start();
  // The exchange is never retried once it may have reached Finch: one failure is enough.
  await emulator('/_emulator/faults', { path: '/auth/token', status: 500, times: 1 });
  await page.getByRole('button', { name: 'Connect' }).click();
  await page.waitForURL((u) => u.href.startsWith(PERCH + '/'));
  await banner(page).filter({ hasText: 'Finch was unavailable' }).waitFor();
  assert.match(await banner(page).textContent(), /Please try again in a moment\. \(reference [\w-]+\)/);
  await shot(page, '12-finch-unavailable');
  assert.equal(await rows(page).count(), 0);
  assert.deepEqual(problems, []);
  await context.close();
});

test('each customer sees only its own connections', async () => {
  const a = await signedIn(customerName('tenant-a'));
  await connectEmbedded(a.page);
  await rows(a.page).first().waitFor();

  const b = await signedIn(customerName('tenant-b'));
  await b.page.locator('#empty').waitFor();
  assert.equal(await rows(b.page).count(), 0);
  await shot(b.page, '08-other-customer');

  // Switching customer in the same tab changes what is shown.
  await a.page.getByRole('button', { name: 'Switch customer' }).click();
  await a.page.getByLabel('Customer').fill(customerName('tenant-c'));
  await a.page.getByRole('button', { name: 'Sign in' }).click();
  await a.page.locator('#empty').waitFor();
  assert.equal(await rows(a.page).count(), 0);
  await a.context.close();
  await b.context.close();
});

test('a second provider connects beside the first', async () => {
  const { context, page } = await signedIn(customerName('initech'));
  await connectEmbedded(page);
  await rows(page).first().waitFor();
  await connectEmbedded(page, 'Connect another payroll system', 'adp_run');
  await banner(page).filter({ hasText: 'is connected' }).waitFor();
  await rows(page).nth(1).waitFor();
  const ids = await rows(page).evaluateAll((trs) => trs.map((tr) => tr.dataset.connectionId));
  assert.equal(new Set(ids).size, 2);
  assert.match(await row(page, ids[1]).innerText(), /adp_run/);
  // One of the two needs the employer again; only that one offers Reconnect.
  await emulator(`/_emulator/connections/${ids[1]}/status`, { status: 'reauth' });
  await page.getByRole('button', { name: 'Refresh' }).click();
  await row(page, ids[1]).locator('.badge', { hasText: 'Needs reconnect' }).waitFor();
  assert.equal(await row(page, ids[0]).locator('.badge').innerText(), 'Connected');
  assert.equal(await row(page, ids[0]).getByRole('button', { name: 'Reconnect' }).count(), 0);
  await page.locator('#banner').evaluate((b) => { b.hidden = true; });
  await shot(page, '10-two-connections');
  await context.close();
});

test('every status Finch reports has its badge and the actions that fit it', async () => {
  const { context, page } = await signedIn(customerName('umbrella'));
  await connectEmbedded(page);
  await rows(page).first().waitFor();
  const id = await rows(page).first().getAttribute('data-connection-id');
  const expected = [
    ['pending', 'Pending', false],
    ['error_no_account_setup', 'Error', true],
    ['error_permissions', 'Error', true],
    ['reauth', 'Needs reconnect', true],
    ['connected', 'Connected', false],
  ];
  // (A whole connection's `disconnected` comes from the status check, not from a webhook: the
  // emulator's webhooks name an entity, and an entity leaving keeps the connection.)
  for (const [status, label, reconnect] of expected) {
    // The emulator flips the status and tells Perch by signed webhook before it answers.
    await emulator(`/_emulator/connections/${id}/status`, { status });
    await page.getByRole('button', { name: 'Refresh' }).click();
    await row(page, id).and(page.locator(`[data-status="${status}"]`)).waitFor();
    assert.equal(await row(page, id).locator('.badge').innerText(), label, status);
    assert.equal(await row(page, id).getByRole('button', { name: 'Reconnect' }).count(), reconnect ? 1 : 0, status);
    assert.equal(await row(page, id).getByRole('button', { name: 'Disconnect' }).count(), 1, status);
  }
  await context.close();
});

test('closing Finch Connect and failures are told in words', async () => {
  const { context, page } = await signedIn(customerName('hooli'));

  // The employer closes Connect: the SDK reports `closed`.
  await page.getByRole('button', { name: 'Connect a payroll system' }).click();
  await page.frameLocator('#finch-connect-iframe').getByRole('button', { name: 'Cancel' }).click();
  await page.locator('#finch-connect-iframe').waitFor({ state: 'detached' });
  await banner(page).filter({ hasText: 'closed before the payroll system was connected' }).waitFor();
  assert.equal(await rows(page).count(), 0);

  // Finch fails: Perch answers 502, and the page says what that means for the person.
  await emulator('/_emulator/faults', { path: '/connect/sessions', status: 500, times: 100 });
  try {
    await page.getByRole('button', { name: 'Connect a payroll system' }).click();
    await banner(page).filter({ hasText: 'Finch did not answer properly' }).waitFor();
    assert.equal(await banner(page).getAttribute('data-kind'), 'error');
    assert.equal(await page.locator('#finch-connect-iframe').count(), 0);
    await shot(page, '09-finch-error');
  } finally {
    await fetch(FINCH + '/_emulator/faults', { method: 'DELETE' });
  }

  // An expired or forged sign-in: Perch's authorizer answers 401, the page asks to sign in again.
  await page.evaluate(() => sessionStorage.setItem('perch.token', 'not-a-valid-token'));
  await page.getByRole('button', { name: 'Refresh' }).click();
  await banner(page).filter({ hasText: 'Your sign-in has expired' }).waitFor();
  await page.locator('#login').waitFor();
  await context.close();
});

test('an employer connects several entities and disconnects one of them', async () => {
  const customer = customerName('conglo');
  const { context, page, problems } = await signedIn(customer);
  // Finch Sandbox's `multi_entity` password makes Connect ask which entities to share.
  await page.getByRole('button', { name: 'Connect a payroll system' }).click();
  const frame = page.frameLocator('#finch-connect-iframe');
  await frame.getByLabel('Password').fill('multi_entity');
  await frame.getByRole('button', { name: 'Connect' }).click();
  await frame.getByLabel(`${customer}, Inc.`).check();
  await frame.getByLabel(`${customer} East`).check();
  await frame.getByLabel(`${customer} West`).check();
  await frame.getByRole('button', { name: 'Connect' }).click();
  await page.locator('#finch-connect-iframe').waitFor({ state: 'detached' });
  await banner(page).filter({ hasText: 'is connected' }).waitFor();
  await rows(page).first().waitFor();
  assert.equal(await rows(page).count(), 1, 'several entities, one connection');
  const first = rows(page).first();
  const items = first.locator('ul.entities li');
  assert.deepEqual(
    (await items.allInnerTexts()).map((t) => t.replace(/\s+Disconnect$/, '').trim()),
    [`${customer}, Inc. Connected`, `${customer} East Connected`, `${customer} West Connected`],
  );
  assert.match(await first.locator('td.employer').innerText(), /Automated \(credential\)/);
  await page.locator('#banner').evaluate((b) => { b.hidden = true; });
  await shot(page, '13-entities');

  // One entity leaves; the connection stays for the other two.
  const east = first.locator('ul.entities li', { hasText: 'East' });
  await east.getByRole('button', { name: 'Disconnect' }).click();
  assert.match(await page.locator('#confirm-what').innerText(), /stays for its other entities/);
  await page.locator('#confirm-disconnect').click();
  await banner(page).filter({ hasText: `${customer} East is disconnected` }).waitFor();
  await first.locator('ul.entities li[data-status="disconnected"]', { hasText: 'East' }).waitFor();
  assert.equal(await rows(page).count(), 1);
  assert.equal(await first.locator('.badge').first().innerText(), 'Connected');
  const id = await first.getAttribute('data-connection-id');
  const atFinch = (await emulator('/_emulator/connections')).find((c) => c.id === id);
  assert.deepEqual(atFinch.entities.map((e) => e.status), ['connected', 'disconnected', 'connected']);
  await shot(page, '14-entity-disconnected');
  assert.deepEqual(problems, []);
  await context.close();
});

test('the same employer connected twice is one connection', async () => {
  const customer = customerName('twice');
  const { context, page, problems } = await signedIn(customer);
  await connectEmbedded(page);
  await rows(page).first().waitFor();
  // The same login to the same provider again: Perch keeps the first and tells so.
  await connectEmbedded(page, 'Connect another payroll system');
  await banner(page).filter({ hasText: 'was already connected with this payroll system' }).waitFor();
  assert.equal(await rows(page).count(), 1);
  // Finch made a second connection (under `<customer>-2`); Perch disconnected it there.
  const mine = (await emulator('/_emulator/connections')).filter((c) => (c.customer_id || '').startsWith(customer));
  assert.deepEqual(mine.map((c) => [c.customer_id, c.disconnected]), [[customer, false], [`${customer}-2`, true]]);
  assert.deepEqual(problems, []);
  await context.close();
});

test('a connection opens to its sync state and its employees, and a person to their pay by period', async () => {
  const customer = customerName('payco');
  const { context, page, problems } = await signedIn(customer);
  await page.getByLabel('Payments').check();
  await page.getByLabel('Pay statements').check();
  await connectEmbedded(page);
  await banner(page).filter({ hasText: 'is connected' }).waitFor();
  const id = await rows(page).first().getAttribute('data-connection-id');

  // The connection's data: the first sync runs on the local worker while the page watches.
  await row(page, id).getByRole('button', { name: 'Data' }).click();
  await page.locator('#data').waitFor();
  const card = page.locator('#sync .card').first();
  await card.waitFor();
  await shot(page, '20-data-syncing');
  // Two years of pay is a few minutes of Finch's windows; the stack compresses them to seconds.
  await page.locator('#sync .card[data-state="current"][data-pay-state="current"]').waitFor({ timeout: 180_000 });
  assert.match(await card.innerText(), /Pay periods\s+(\d+) of \1/);
  assert.match(await card.innerText(), /Current/);
  await page.locator('#employees tbody tr').first().waitFor();
  const listed = await page.locator('#employees tbody tr').count();
  assert.ok(listed >= 20, `${listed} employees`);
  await shot(page, '21-data-current');

  // Search by a last name: only people whose name contains it.
  const name = (await page.locator('#employees tbody tr td strong').first().innerText()).split(' ').pop();
  await page.getByLabel('Search by name').fill(name.toLowerCase());
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForFunction((n) => [...document.querySelectorAll('#employees tbody tr')].length > 0
    && [...document.querySelectorAll('#employees tbody tr td strong')].every((s) => s.textContent.includes(n)), name);
  await shot(page, '22-search');
  await page.getByLabel('Search by name').fill('zzzz-nobody');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#employees-empty', { hasText: 'No one whose name contains' }).waitFor();
  await page.getByLabel('Search by name').fill(name);
  await page.getByRole('button', { name: 'Search' }).click();

  // A person: where they appear, and their pay by period, newest first, in dollars.
  await page.locator('#employees tbody tr[data-person-id]').first().click();
  await page.locator('#person[open]').waitFor();
  assert.equal(await page.locator('#person-sources li').count(), 1);
  await page.locator('#person-pay tbody tr').first().waitFor();
  const pay = await page.locator('#person-pay tbody tr').allInnerTexts();
  assert.ok(pay.length > 10, `${pay.length} pay periods`);
  assert.match(pay[0], /\$[\d,]+\.\d\d/);
  const dates = await page.locator('#person-pay tbody tr td:first-child').allInnerTexts();
  assert.deepEqual([...dates].sort().reverse(), dates, 'newest first');
  assert.match(await page.locator('#person-totals').innerText(), /statement\(s\): \$[\d,]+\.\d\d gross/);
  await shot(page, '23-person-pay');
  await page.getByRole('button', { name: 'Close' }).click();
  await page.getByRole('button', { name: 'All connections' }).click();
  await row(page, id).waitFor();
  assert.deepEqual(problems, []);
  await context.close();
});
