// The web console as a person uses it, in headless Chromium (Debian's, driven by Playwright's
// playwright-core; no browser download). tests/it/console.rs starts the real server with the
// correlation scenarios sent, then runs this with:
//   CONSOLE_BASE_URL        http://127.0.0.1:PORT
//   CONSOLE_TOKENS          {"auditor","reviewer","admin","ingest"} tokens as JSON
//   CONSOLE_EXPECT          what the scenarios must show, as JSON (see tests/it/console.rs)
//   CONSOLE_SCREENSHOTS     where to write a PNG of every page at 1280 and 800 px
//   CONSOLE_DOWNLOADS       where to save the downloaded report
//   CHROMIUM                the browser (default /usr/bin/chromium)
//   CONSOLE_PHASE           `all` (default), or `tampered`: only the reviewer's verify now, which
//                           must fail and list its findings (the harness damaged the ledger first)
// Any failed check exits non-zero with a message saying what was expected and what was seen.

import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inflateRawSync } from 'node:zlib';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env('CONSOLE_BASE_URL');
const tokens = JSON.parse(env('CONSOLE_TOKENS'));
const expect = JSON.parse(env('CONSOLE_EXPECT'));
const shots = env('CONSOLE_SCREENSHOTS');
const downloads = env('CONSOLE_DOWNLOADS');
mkdirSync(shots, { recursive: true });
mkdirSync(downloads, { recursive: true });

const WIDTHS = [1280, 800];
let checks = 0;

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
  checks += 1;
}

function same(actual, wanted, what) {
  const a = JSON.stringify(actual);
  const w = JSON.stringify(wanted);
  check(a === w, `${what}: expected ${w}, saw ${a}`);
}

/** The page at each width, full length, as NAME-WIDTH.png. */
async function screenshots(page, name) {
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: 900 });
    await page.waitForTimeout(50);
    await page.screenshot({ path: join(shots, `${name}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

/** A4 portrait less app.css's @page margins (210 mm - 2 x 10 mm at 96 px per inch). */
const A4_CONTENT_PX = 718;

/**
 * The page as printed: laid out for print at A4's content width, nothing may stick out to the
 * right (a wide table or an unbroken hash would be cut off on paper), the screen's controls are
 * gone; and NAME.pdf is written beside the screenshots for a person to look at.
 */
async function printed(page, name) {
  await page.emulateMedia({ media: 'print' });
  await page.setViewportSize({ width: A4_CONTENT_PX, height: 1000 });
  await page.waitForTimeout(50);
  const widest = await page.evaluate(() => [...document.querySelectorAll('main *')]
    .filter((e) => e.getClientRects().length > 0)
    .map((e) => ({ right: Math.ceil(e.getBoundingClientRect().right), what: `${e.tagName.toLowerCase()}.${e.className} "${e.textContent.slice(0, 40)}"` }))
    .reduce((a, b) => (b.right > a.right ? b : a), { right: 0, what: 'nothing' }));
  check(widest.right <= A4_CONTENT_PX, `${name}: printed, everything fits A4's ${A4_CONTENT_PX} px (${widest.what} reaches ${widest.right} px)`);
  const shown = await page.$$eval('#nav, form.filters, .pager button, #verify', (es) => es.filter((e) => e.getClientRects().length > 0).length);
  same(shown, 0, `${name}: printed, navigation and controls are left out`);
  await page.pdf({ path: join(shots, `${name}.pdf`), format: 'A4' });
  await page.emulateMedia({ media: 'screen' });
  await page.setViewportSize({ width: 1280, height: 900 });
}

/** Waits until the console shows the current location (app.js marks each finished render). */
async function settled(page) {
  await page.waitForFunction(() => document.documentElement.dataset.shown === location.hash);
}

async function signIn(page, token) {
  await page.goto(`${base}/`);
  await page.waitForSelector('#signin');
  await page.fill('#token', token);
  await page.click('#signin button[type=submit]');
}

async function signOut(page) {
  await page.click('#signout');
  await page.waitForSelector('#signin');
  const kept = await page.evaluate(() => sessionStorage.length);
  same(kept, 0, 'sessionStorage after sign-out');
}

async function tableIds(page) {
  await settled(page);
  await page.waitForSelector('table.changes tbody tr');
  return page.$$eval('table.changes tbody tr[data-change]', (rows) => rows.map((r) => r.dataset.change));
}

/** Applies the list's filters through the form, as a person would. */
async function filter(page, f) {
  await page.goto(`${base}/#/changes`);
  await settled(page);
  await page.fill('#f-from', f.from || '');
  await page.fill('#f-to', f.to || '');
  await page.fill('#f-environment', f.environment || '');
  await page.fill('#f-service', f.service || '');
  await page.selectOption('#f-exception', f.exception || '');
  if (f.limit) await page.selectOption('#f-limit', String(f.limit));
  const before = page.url();
  await page.click('#filters button[type=submit]');
  await page.waitForFunction((u) => location.href !== u, before).catch(() => {});
  await settled(page);
}

/** The names and bytes of the files in a zip, read from its central directory. */
function unzip(buf) {
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i -= 1) {
    if (buf.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  }
  check(eocd >= 0, 'the download is a zip (end of central directory found)');
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const files = new Map();
  for (let n = 0; n < count; n += 1) {
    check(buf.readUInt32LE(p) === 0x02014b50, 'a central directory entry');
    const method = buf.readUInt16LE(p + 10);
    const size = buf.readUInt32LE(p + 20);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.toString('utf8', p + 46, p + 46 + nameLen);
    const start = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const raw = buf.subarray(start, start + size);
    files.set(name, { method, raw });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return {
    names: [...files.keys()],
    read(name) {
      const f = files.get(name);
      if (!f) return null;
      return f.method === 8 ? inflateRawSync(f.raw) : f.raw;
    },
  };
}

async function auditor(page) {
  // Sign in: the changes page opens and the navigation offers only the auditor's pages.
  await page.goto(`${base}/`);
  await page.waitForSelector('#signin');
  await screenshots(page, '01-sign-in');
  await signIn(page, tokens.auditor);
  // The dashboard opens first: the four keys, failures, open alerts.
  await page.waitForSelector('#four-keys');
  same(await page.$$eval('#nav a', (as) => as.map((a) => a.textContent)), ['Dashboard', 'Changes', 'Alerts', 'Reports'], 'auditor navigation');
  await page.goto(`${base}/#/dashboard?from=${expect.from}&to=${expect.to}`);
  await settled(page);
  same(await page.textContent('#k-deployments .card-value'), String(expect.delivery.deployments), 'January deployments on the dashboard');
  same(await page.$$eval('table.failures tbody tr', (rs) => rs.length), expect.delivery.failures, 'failed changes listed');
  same(await page.textContent('#k-alerts .card-value'), String(expect.alerts.open), 'open alerts counted');
  same(await page.$$eval('table.exceptions-by-week tbody tr', (rs) => rs.map((r) => r.dataset.code)), expect.delivery.codes, 'exceptions by code over the weeks');
  await screenshots(page, '01b-dashboard');
  await page.goto(`${base}/#/changes`);
  await page.waitForSelector('table.changes');
  check((await page.textContent('#who-role')) === 'auditor', 'the role is shown');
  const stored = await page.evaluate(() => [sessionStorage.length, localStorage.length]);
  same(stored, [1, 0], 'the token is in sessionStorage only');
  // The list opens on the last 30 days (UTC dates, today inclusive), shown in the form.
  const today = new Date();
  const monthAgo = new Date(today.getTime());
  monthAgo.setUTCDate(monthAgo.getUTCDate() - 29);
  same([await page.inputValue('#f-from'), await page.inputValue('#f-to')],
    [monthAgo.toISOString().slice(0, 10), today.toISOString().slice(0, 10)], 'the list opens on the last 30 days');

  // January's production changes: each row's exception badges are the report's codes.
  await filter(page, { from: expect.from, to: expect.to, environment: 'production' });
  same(await page.textContent('#showing'), `Showing 1–${expect.production_total} of ${expect.production_total}`, 'January in production');
  for (const [id, codes] of Object.entries(expect.exceptions)) {
    const row = await page.$(`tr[data-change="${id}"]`);
    check(row, `${id} is listed`);
    const shown = await row.$$eval('td.exceptions .badge', (bs) => bs.map((b) => b.textContent).sort());
    same(shown, [...codes].sort(), `exception badges of ${id}`);
  }
  await screenshots(page, '02-changes');
  await printed(page, '02-changes-print');
  const applied = await page.textContent('#print-filters');
  check(applied.startsWith('Filters: requested '), `the printed list says which filters it shows (${applied})`);

  // Every change, ten a page: "showing 1–10 of N", then the next page.
  await filter(page, { limit: 10 });
  const total = expect.all_total;
  const first = await tableIds(page);
  same(first.length, Math.min(10, total), 'rows on the first page');
  same(await page.textContent('#showing'), `Showing 1–${Math.min(10, total)} of ${total}`, 'the paging line');
  check(total > 10, `more than one page of changes (${total})`);
  {
    await page.click('#next');
    await page.waitForFunction(() => /offset=10/.test(location.hash));
    await settled(page);
    same(await page.textContent('#showing'), `Showing 11–${Math.min(20, total)} of ${total}`, 'the second page\'s paging line');
    const second = await tableIds(page);
    check(second.every((id) => !first.includes(id)), 'the second page repeats no change of the first');
    same(first.length + second.length, Math.min(20, total), 'rows over two pages');
  }

  // The exception filter offers every code the rules produce.
  const offered = await page.$$eval('#f-exception option', (os) => os.map((o) => o.value).filter(Boolean));
  same(offered.join(','), expect.codes.join(','), 'the exception filter offers every code');

  // Filters: by exception code and by service; they are kept in the URL.
  for (const f of expect.filters) {
    await filter(page, f);
    const ids = await tableIds(page);
    same(ids.sort(), [...f.ids].sort(), `changes filtered by ${JSON.stringify(f)}`);
    if (f.exception) check(page.url().includes(`exception=${f.exception}`), 'the exception filter is in the URL');
    if (f.service) check(page.url().includes(`service=${encodeURIComponent(f.service)}`), 'the service filter is in the URL');
  }
  await page.reload();
  await page.waitForSelector('table.changes tbody tr[data-change]');
  const last = expect.filters[expect.filters.length - 1];
  same((await tableIds(page)).sort(), [...last.ids].sort(), 'a reload keeps the filters');
  await screenshots(page, '03-changes-filtered');

  // A change with an approval and a retried deploy: its timeline.
  const r = expect.retried;
  await page.goto(`${base}/#/changes/${encodeURIComponent(r.id)}`);
  await settled(page);
  const approver = await page.textContent('#timeline li[data-step="approval"] .approver');
  check(approver.includes(r.approver), `the timeline names the approver ${r.approver} (saw ${approver})`);
  const verified = await page.textContent('#timeline li[data-step="approval"] .approver .badge');
  same(verified, 'verified', 'the approver is marked verified');
  const requester = await page.textContent('#timeline li[data-step="requested"] .principal');
  check(requester.includes(r.requester), `the timeline names the requester ${r.requester}`);
  const summary = await page.textContent('#timeline li[data-step="deploy"] details.retries summary');
  check(summary.includes(r.retries), `the retried deploy is one group "${r.retries}" (saw ${summary})`);
  const open = await page.$eval('#timeline details.retries', (d) => d.open);
  check(!open, 'the retries start collapsed');
  await page.click('#timeline details.retries summary');
  const attempts = await page.$$eval('#timeline details.retries table.attempts tbody tr', (rows) => rows.length);
  same(attempts, r.attempts, 'attempts inside the group');
  const sentBy = await page.textContent('#timeline li[data-step="approval"] .step-body');
  check(sentBy.includes('Sent by') && sentBy.includes(r.sender), `the approval says who sent it (${r.sender})`);
  check(sentBy.includes('Received'), 'the approval says when the service received it');
  const from = await page.textContent('#timeline details.retries table.attempts tbody');
  check(from.includes(r.sender), 'each attempt says who sent it');
  const spans = await page.textContent('#timeline li[data-step="runtime"]');
  check(spans.includes('Spans'), 'the runtime spans are summarised');

  // Trace ids link into the tracing UI by the configured template, and open outside the console.
  const links = await page.$$eval('#timeline a.trace-link', (as) => as.map((a) => ({ href: a.getAttribute('href'), text: a.textContent, rel: a.getAttribute('rel') })));
  check(links.length > 0, 'trace ids link to the tracing UI');
  for (const l of links) {
    same(l.href, expect.trace_url.replace('{trace_id}', l.text), `the trace link follows the template (${l.text})`);
    check(/^[0-9a-f]{32}$/.test(l.text) && l.rel.includes('noopener'), `a trace link names a trace id and opens apart (${l.href})`);
  }

  check(await page.$('.panel.ok'), 'a change without exceptions says so');
  await screenshots(page, '04-change');
  await printed(page, '04-change-print');

  // A Conductor execution whose history was rewritten: the kinds, and each task before and after.
  await page.goto(`${base}/#/changes/CHG-2041`);
  await settled(page);
  const rewrite = await page.textContent('#timeline li[data-step="rewrite"] .step-body p');
  check(rewrite.includes('remove') && rewrite.includes('skip'), `the rewrite names its kinds (saw ${rewrite})`);
  const diff = await page.$$eval('#timeline li[data-step="rewrite"] table tbody tr', (rows) => rows.map((r) => r.textContent));
  same(diff.length, 4, `one row per task the rewrite changed (saw ${diff})`);
  check(diff.some((d) => d.includes('vanished')) && diff.some((d) => d.includes('SKIPPED')), `the rows say what each task became (saw ${diff})`);

  // A change with exceptions: highlighted at the top and on the step they concern.
  const x = expect.flagged;
  await page.goto(`${base}/#/changes/${encodeURIComponent(x.id)}`);
  await settled(page);
  const top = await page.$$eval('.panel.bad .badge', (bs) => bs.map((b) => b.textContent).sort());
  same(top, [...x.codes].sort(), `exceptions at the top of ${x.id}`);
  const onStep = await page.$$eval(`#timeline li.flagged[data-step="${x.step}"] .step-exceptions .badge`, (bs) => bs.map((b) => b.textContent));
  check(onStep.includes(x.step_code), `${x.step_code} is marked on the ${x.step} step (saw ${onStep})`);
  await screenshots(page, '05-change-exceptions');

  // Reports: the period, then the download; the zip holds the signed manifest.
  await page.click('#nav a[href="#/reports"]');
  await page.waitForSelector('#report-form');
  // Mistakes are explained: a sample without its seed (caught here), a period backwards (the
  // server's 400, shown as it says it).
  await page.fill('#r-from', expect.from);
  await page.fill('#r-to', expect.to);
  await page.fill('#r-sample', '3');
  await page.click('#build');
  await page.waitForSelector('#report-status .panel.bad');
  check((await page.textContent('#report-status')).includes('Sample size and seed go together'), 'a sample needs its seed');
  await page.fill('#r-sample', '');
  await page.fill('#r-from', expect.to);
  await page.fill('#r-to', expect.from);
  await page.click('#build');
  await page.waitForFunction(() => /cannot be built/.test(document.querySelector('#report-status').textContent));
  const said = await page.textContent('#report-status .panel.bad p');
  check(said.length > 10, `the server's reason is shown (${said})`);
  await page.fill('#r-from', expect.from);
  await page.fill('#r-to', expect.to);
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 120000 }),
    page.click('#build'),
  ]);
  const name = download.suggestedFilename();
  check(/^changetrail-soc2-.*\.zip$/.test(name), `the report's file name (${name})`);
  const path = join(downloads, name);
  await download.saveAs(path);
  const zip = unzip(readFileSync(path));
  for (const f of ['manifest.json', 'manifest.sig', 'population.csv']) {
    check(zip.names.includes(f), `the zip holds ${f} (it holds ${zip.names.join(', ')})`);
  }
  const manifest = JSON.parse(zip.read('manifest.json').toString('utf8'));
  check(String(manifest.period_start).startsWith(expect.from), `the manifest's period starts ${expect.from}`);
  await page.waitForSelector('#report-name');
  same(await page.textContent('#report-name'), name, 'the page names the downloaded file');
  writeFileSync(join(downloads, 'report-name.txt'), name);
  await screenshots(page, '06-reports');

  // Alerts: what is open now, and every event with where it was delivered.
  await page.goto(`${base}/#/alerts`);
  await page.waitForSelector('table.alerts');
  same(await page.$$eval('table.open-alerts tbody tr', (rs) => rs.length), expect.alerts.open, 'open alerts listed');
  same(await page.$$eval('table.alerts tbody tr', (rs) => rs.length), expect.alerts.events, 'alert events listed');
  const selfCodes = await page.$$eval('table.open-alerts tr[data-change="CHG-SELF"] .badge', (bs) => bs.map((b) => b.textContent).sort());
  same(selfCodes, [...expect.alerts.self_codes].sort(), 'CHG-SELF\'s open codes');
  const undelivered = await page.$$eval('table.alerts td .badge', (bs) => bs.filter((b) => b.textContent.startsWith('oncall:') && b.textContent !== 'oncall: delivered').length);
  same(undelivered, 0, 'every event delivered to the webhook');
  await screenshots(page, '11-alerts');

  // A role's pages only: the ledger is not the auditor's.
  await page.goto(`${base}/#/ledger`);
  await page.waitForSelector('#four-keys');
  check(page.url().endsWith('#/dashboard'), 'an auditor sent to the ledger lands on the dashboard');
  await signOut(page);
}

async function reviewer(page) {
  await signIn(page, tokens.reviewer);
  await page.waitForSelector('#verify');
  same(await page.$$eval('#nav a', (as) => as.map((a) => a.textContent)), ['Ledger', 'Alerts'], 'reviewer navigation');
  const note = await page.textContent('#checkpoint-note');
  check(note.includes('\n\u2014 '), 'the checkpoint note is shown with its signature lines');
  const keys = await page.$$eval('table.keys tbody tr', (rows) => rows.length);
  check(keys >= 1, 'the keys table lists the signing key');
  await page.click('#verify');
  await page.waitForSelector('#verdict', { timeout: 120000 });
  check(await page.$('#verify-result .panel.ok'), 'the verification passed (green)');
  const verdict = await page.textContent('#verdict');
  check(verdict.startsWith('OK'), `the verdict (${verdict})`);
  check(await page.$('#no-findings'), 'no findings are listed');
  await screenshots(page, '07-ledger');
  await printed(page, '07-ledger-print');
  await signOut(page);
}

/** After the harness changed a stored payload behind the server's back: verify now must fail. */
async function tampered(page) {
  await signIn(page, tokens.reviewer);
  await page.waitForSelector('#verify');
  await page.click('#verify');
  await page.waitForSelector('#verdict', { timeout: 120000 });
  check(await page.$('#verify-result .panel.bad'), 'the verification failed (red)');
  const verdict = await page.textContent('#verdict');
  check(!verdict.startsWith('OK'), `the verdict is not OK (${verdict})`);
  const classes = await page.$$eval('table.findings tbody tr td:first-child', (tds) => tds.map((t) => t.textContent));
  check(classes.includes('MODIFIED'), `the findings name the modified entry (${classes.join(', ')})`);
  check(!(await page.$('#no-findings')), 'no "No findings." line');
  await screenshots(page, '10-ledger-tampered');
  await signOut(page);
}

async function admin(page) {
  await signIn(page, tokens.admin);
  await page.waitForSelector('table.tokens');
  same(await page.$$eval('#nav a', (as) => as.map((a) => a.textContent)), ['Tokens'], 'admin navigation');
  const rows = await page.$$eval('table.tokens tbody tr', (trs) => trs.length);
  check(rows >= 4, `the token list (${rows} rows)`);
  const text = await page.textContent('main');
  for (const t of Object.values(tokens)) {
    check(!text.includes(t.split('_').slice(2).join('_')), 'no secret is shown');
  }
  await screenshots(page, '08-tokens');

  // A token revoked while it is signed in: the next call brings the sign-in back, saying why.
  const created = await fetch(`${base}/v1/admin/tokens`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${tokens.admin}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ role: 'auditor', name: 'revoked-while-signed-in' }),
  }).then((r) => r.json());
  await signOut(page);
  await signIn(page, created.token);
  await page.waitForSelector('#four-keys');
  const gone = await fetch(`${base}/v1/admin/tokens/${created.id}`, {
    method: 'DELETE',
    headers: { Authorization: `Bearer ${tokens.admin}` },
  });
  same(gone.status, 204, 'the token is revoked');
  await page.click('#nav a[href="#/reports"]');
  await page.click('#nav a[href="#/changes"]');
  await page.waitForSelector('#signin');
  const said = await page.textContent('#signin-status');
  check(said.includes('no longer accepted'), `the sign-in says why (${said})`);
  same(await page.evaluate(() => sessionStorage.length), 0, 'the revoked token is forgotten');
}

async function refused(page) {
  await signIn(page, tokens.ingest);
  await page.waitForSelector('#refusal');
  const text = await page.textContent('#refusal');
  check(text.includes('role ingest'), `the refusal names the role (${text})`);
  check(text.includes('auditor') && text.includes('reviewer') && text.includes('admin'), 'the refusal names the roles that may sign in');
  check(await page.isHidden('#nav'), 'nothing else is shown');
  same(await page.evaluate(() => sessionStorage.length), 0, 'a refused token is not kept');
  await screenshots(page, '09-refused');
  // A token that is not one at all.
  await page.fill('#token', 'ct_000000000000_notatokenatallnotatoken');
  await page.click('#signin button[type=submit]');
  await page.waitForFunction(() => /not accepted/.test(document.querySelector('#signin-status').textContent));
  checks += 1;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let failed = null;
const errors = [];
let page = null;
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  // The page may reach only the server under test: no CDN, nothing else.
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(base) || url.startsWith('blob:') || url.startsWith('data:')) return route.continue();
    errors.push(`request outside the server: ${url}`);
    return route.abort();
  });
  if ((process.env.CONSOLE_PHASE || 'all') === 'tampered') {
    await tampered(page);
  } else {
    await auditor(page);
    await reviewer(page);
    await admin(page);
    await refused(page);
  }
  // The browser logs every refused request; the 400 (the backwards period) and the 401s (the
  // revoked and the bad token) were on purpose. Anything else is a failure.
  const unexpected = errors.filter((e) => !/Failed to load resource: .* status of (400|401)/.test(e));
  check(unexpected.length === 0, `no script errors and no outside requests: ${unexpected.join('; ')}`);
} catch (e) {
  failed = e;
  // What the page showed when the check failed, for the person reading the failure.
  if (page) await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
if (failed) {
  console.error(`console test FAILED after ${checks} checks: ${failed.message}`);
  if (errors.length) console.error(`browser said: ${errors.join('; ')}`);
  process.exit(1);
}
console.log(`console test: ${checks} checks passed; screenshots in ${shots}`);
