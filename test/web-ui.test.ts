import t, { type Test } from 'tap';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EventName } from '../common/event-names.js';
import type { Mac } from '../common/mac.js';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startTestServer, writeFakeImage, type TestServer } from './lib/in-process-server.js';
import { REPO_ROOT } from './lib/paths.js';
import { requirements } from './lib/requirements.js';
import { simulateBoot, SIM_HOST_KEY } from './lib/simulated-boot.js';
import { makeKeyPair } from './lib/ssh-keys.js';

const MAC = '52:54:00:66:00:01';
const DISCOVERED = '02:00:00:66:00:09';
const admin = makeKeyPair().pub;
const ARTIFACTS = join(REPO_ROOT, '.cache', 'test-artifacts');

/**
 * Debian's chromium, headless, with a fresh profile (playwright takes the --user-data-dir as the
 * persistent context's directory), kept off the network; closed at teardown.
 */
async function launch(t: Test, s: TestServer): Promise<BrowserContext> {
  const profile = await mkdtemp(join(tmpdir(), 'ramboot-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    baseURL: s.url,
    timeout: 60_000,
  });
  t.teardown(async () => {
    await context.close().catch(() => undefined);
    await rm(profile, { recursive: true, force: true });
  });
  return context;
}

/** A page with console errors and page errors collected (the test asserts there are none). */
async function open(context: BrowserContext, s: TestServer): Promise<{ page: Page; errors: string[] }> {
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: s.url });
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto('/');
  return { page, errors };
}

const row = (page: Page, mac: string) => page.locator(`tr[data-mac="${mac}"]`);

/**
 * Waits until `read` gives `want` (30 s at most). Reads go through locators, which the page's
 * Content-Security-Policy (no eval) allows; a string predicate for waitForFunction would not.
 */
async function until(read: () => Promise<string | null>, want: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  let got: string | null = null;
  while (Date.now() < end) {
    got = await read().catch(() => null);
    if (got === want) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`still ${JSON.stringify(got)}, wanted ${JSON.stringify(want)}`);
}

t.test('sign in, register, watch a boot live, switch to local, copy known_hosts', async (t) => {
  if (!requirements(t, ['chromium'])) return;
  const s = await startTestServer(t);
  await writeFakeImage(s.dataDir, 'default', { initrdBytes: 2 * 1024 * 1024 });
  const { page, errors } = await open(await launch(t, s), s);

  t.equal(await page.title(), 'ramboot');
  const csp = (await page.request.get('/')).headers()['content-security-policy'];
  t.match(csp, /script-src 'self'/, 'page served with a CSP');

  // wrong token first: a clear message, still on the login form
  await page.getByLabel('Admin API token').fill('wrong-token-0123456789');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('The server refused the token').waitFor();
  // the browser logs the refused request itself; that one is expected
  t.same(errors.splice(0), ['Failed to load resource: the server responded with a status of 401 (Unauthorized)']);
  await page.getByLabel('Admin API token').fill(s.token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText('Signed in.').waitFor();
  t.notOk(page.url().includes(s.token), 'token never in the URL');
  t.equal(await page.evaluate<string | null>("sessionStorage.getItem('ramboot.token')"), s.token, 'token in sessionStorage');
  t.equal(await page.evaluate<number>('localStorage.length'), 0, 'nothing in localStorage');
  await page.locator('#live:text("live")').waitFor();

  // register through the form
  await page.getByLabel('MAC address').fill(MAC);
  await page.getByLabel('Host name').fill('web1');
  await page.getByLabel('SSH public keys').fill(admin);
  await page.getByLabel('Boot', { exact: true }).selectOption('once');
  await page.getByRole('button', { name: 'Register' }).click();
  await row(page, MAC).waitFor();
  t.match(await row(page, MAC).innerText(), /web1[\s\S]*registered/);
  t.equal(await row(page, MAC).getByRole('button', { name: 'once' }).getAttribute('aria-pressed'), 'true');

  // open its timeline, then drive a boot from the test: every step appears live
  await row(page, MAC).getByRole('button', { name: 'Timeline' }).click();
  await page.locator('#timeline li', { hasText: 'api.registered' }).waitFor();
  const bar = row(page, MAC).getByRole('progressbar', { name: `Boot progress of ${MAC}` });
  await simulateBoot(s.url, MAC, {
    registry: s.rb.registry,
    between: async (step) => {
      if (step === 'script') {
        await page.locator('#timeline li', { hasText: 'ipxe.script' }).waitFor();
        t.equal(await bar.getAttribute('value'), '25', 'script: a quarter');
      } else if (step === 'image') {
        await page.locator('#timeline li', { hasText: 'image.fetch' }).nth(1).waitFor();
        await row(page, MAC).getByText(/initrd\.img: 2\.1 MiB fetched/).waitFor();
        t.equal(await bar.getAttribute('value'), '50', 'image fetched: half');
      } else {
        await page.locator('#timeline li', { hasText: 'os.sshd.ready' }).waitFor();
        t.equal(await bar.getAttribute('value'), '75');
      }
    },
  });
  await page.locator('#timeline li', { hasText: 'phone-home.ready' }).waitFor();
  await row(page, MAC).locator('.state-ready').waitFor();
  await until(() => page.locator(`tr[data-mac="${MAC}"] progress`).getAttribute('value'), '100');
  // once flipped to local by the phone-home, shown without a reload
  await row(page, MAC).locator('button[data-mode="local"][aria-pressed="true"]').waitFor();

  // a deploy reporting its percent moves the bar (deploy.progress is recorded by the deploy work)
  await s.rb.registry.event(MAC as Mac, { event: 'deploy.progress' as EventName, level: 'info', message: 'writing disk', data: { percent: 40 } });
  await until(() => page.locator(`tr[data-mac="${MAC}"] progress`).getAttribute('value'), '40');
  await row(page, MAC).getByText('deploying: writing disk').waitFor();

  // known_hosts: shown and copied
  const knownHosts = `127.0.0.1,web1 ${SIM_HOST_KEY.split(' ').slice(0, 2).join(' ')}\n`;
  await until(() => page.locator('#known-hosts').inputValue(), knownHosts);
  await page.getByRole('button', { name: 'Copy known_hosts' }).click();
  await page.getByText(/Copied known_hosts/).waitFor();
  t.equal(await page.evaluate<string>('navigator.clipboard.readText()'), knownHosts, 'clipboard holds known_hosts');

  // switch to ramboot, then local, with the buttons
  await row(page, MAC).getByRole('button', { name: 'ramboot' }).click();
  await page.getByText(`${MAC} now boots: ramboot.`).waitFor();
  t.match((await s.api('GET', `/api/v1/machines/${MAC}`)).json, { boot: 'ramboot' });
  await row(page, MAC).getByRole('button', { name: 'local' }).click();
  await page.getByText(`${MAC} now boots: local.`).waitFor();
  t.match((await s.api('GET', `/api/v1/machines/${MAC}`)).json, { boot: 'local' });
  await page.locator('#timeline li', { hasText: 'machine updated: boot' }).nth(1).waitFor();

  // a discovered MAC shows up live and is adopted with keys
  await fetch(`${s.url}/ipxe?mac=${DISCOVERED}`);
  await row(page, DISCOVERED).locator('.state-discovered').waitFor();
  await row(page, DISCOVERED).getByRole('button', { name: 'Adopt…' }).click();
  await page.getByLabel(`SSH keys for ${DISCOVERED}`).fill(admin);
  await page.getByRole('form', { name: `Adopt ${DISCOVERED}` }).getByLabel('Boot').selectOption('once');
  await page.getByRole('button', { name: 'Adopt', exact: true }).click();
  await page.getByText(`${DISCOVERED} adopted.`).waitFor();
  t.match((await s.api('GET', `/api/v1/machines/${DISCOVERED}`)).json, { discovered: false, boot: 'once', status: { state: 'registered' } });

  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'web-ui.png'), fullPage: true });
  t.same(errors, [], 'no console errors');
});

t.test('keyboard only: sign in, find a machine, switch its boot mode, open its timeline', async (t) => {
  if (!requirements(t, ['chromium'])) return;
  const s = await startTestServer(t);
  await s.api('PUT', `/api/v1/machines/${MAC}`, { sshKeys: [admin], boot: 'ramboot' });
  const { page, errors } = await open(await launch(t, s), s);

  // the token field has focus on load
  t.equal(await page.evaluate<string | undefined>('document.activeElement?.id'), 'token');
  await page.keyboard.type(s.token);
  await page.keyboard.press('Enter');
  await row(page, MAC).waitFor();

  /** Tab until the focused element matches, at most `max` presses; returns its accessible text. */
  const tabTo = async (pred: string, max = 30): Promise<void> => {
    for (let i = 0; i < max; i++) {
      await page.keyboard.press('Tab');
      if (await page.evaluate<boolean>(`document.activeElement?.matches(${JSON.stringify(pred)}) ?? false`)) return;
    }
    throw new Error(`focus never reached ${pred}`);
  };
  // focus order: Sign out, then the row's boot buttons, then its actions
  await tabTo(`tr[data-mac="${MAC}"] button[data-mode="once"]`);
  await page.keyboard.press('Enter');
  await page.getByText(`${MAC} now boots: once.`).waitFor();
  t.match((await s.api('GET', `/api/v1/machines/${MAC}`)).json, { boot: 'once' });
  t.equal(await page.evaluate<string | undefined>('document.activeElement?.dataset.mode'), 'once', 'focus stays on the button after the row updates');
  await page.keyboard.press('Tab');
  await page.keyboard.press(' ');
  await page.getByText(`${MAC} now boots: local.`).waitFor();
  await tabTo(`tr[data-mac="${MAC}"] button[aria-controls="detail"]`);
  await page.keyboard.press('Enter');
  await page.locator('#timeline li', { hasText: 'api.updated' }).nth(1).waitFor();
  t.equal(await page.evaluate<string | undefined>('document.activeElement?.id'), 'detail-title', 'focus moves to the timeline');

  // every control has an accessible name
  const unnamed = await page.evaluate<string[]>(`
    [...document.querySelectorAll('button, input, select, textarea, progress')]
      .filter((e) => !e.closest('[hidden]'))
      .filter((e) => !(e.getAttribute('aria-label') || e.textContent.trim() || (e.id && document.querySelector('label[for="' + e.id + '"]'))))
      .map((e) => e.outerHTML.slice(0, 80))`);
  t.same(unnamed, [], 'no unnamed control');
  t.same(errors, [], 'no console errors');
});
