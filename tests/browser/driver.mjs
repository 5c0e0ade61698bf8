// A thin bridge from the Python tests to Chromium: one JSON command per stdin
// line, one JSON answer per stdout line. The test logic lives in Python.
//
//   {"id": 1, "cmd": "open", "url": "http://127.0.0.1:8080/page", "html": "...",
//    "app": {"admin": "http://127.0.0.1:8081", "topics": ["a"]}}
//   {"id": 2, "cmd": "wait", "expr": "window.log.length > 3", "timeout": 5000}
//   {"id": 3, "cmd": "eval", "expr": "window.log"}
//   {"id": 4, "cmd": "reload"}
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'unifrost-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: FLAGS,
  timeout: 20000,
});
let page = context.pages()[0] || await context.newPage();
const console_ = [];
const requests = [];
context.on('request', async (r) => {
  if (!r.url().includes('/events')) return;
  const entry = { url: r.url(), lastEventId: r.headers()['last-event-id'] ?? null };
  requests.push(entry);
  const headers = await r.allHeaders().catch(() => ({}));
  entry.lastEventId = headers['last-event-id'] ?? entry.lastEventId;
});

function watch(p) {
  p.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
  p.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));
}
watch(page);

// The test's "app backend": creates a consumer through the admin API.
async function appRoute(route, app) {
  const response = await fetch(`${app.admin}/consumers`, {
    method: 'POST',
    body: JSON.stringify({ topics: app.topics || [] }),
  });
  await route.fulfill({ status: response.status, contentType: 'application/json', body: await response.text() });
}

const commands = {
  async open({ url, html, app }) {
    await page.unrouteAll({ behavior: 'ignoreErrors' });
    await page.route(url, (route) => route.fulfill({ contentType: 'text/html', body: html }));
    if (app) await page.route(new URL('/app/consumer', url).href, (route) => appRoute(route, app));
    await page.goto(url, { waitUntil: 'load', timeout: 10000 });
    return page.url();
  },
  async goto({ url }) {
    await page.goto(url, { waitUntil: 'load', timeout: 10000 });
    return page.url();
  },
  async eval({ expr }) {
    return page.evaluate(expr);
  },
  async wait({ expr, ms }) {
    const handle = await page.waitForFunction(expr, null, { timeout: ms, polling: 25 });
    return handle.jsonValue();
  },
  async reload() {
    await page.reload({ waitUntil: 'load', timeout: 10000 });
    return page.url();
  },
  async requests() {
    return requests;
  },
  async console() {
    return console_.splice(0);
  },
  async quit() {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
    return true;
  },
};

function answer(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

answer({ ready: true, version: context.browser()?.version() ?? null });
const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  try {
    const value = await commands[command.cmd](command);
    answer({ id: command.id, ok: true, value: value === undefined ? null : value });
  } catch (error) {
    answer({ id: command.id, ok: false, error: String(error && error.stack || error) });
  }
  if (command.cmd === 'quit') break;
}
await context.close().catch(() => {});
fs.rmSync(userDataDir, { recursive: true, force: true });
process.exit(0);
