// What the browser tests and tools/scripts share: start `cretok serve`, drive
// Debian's headless Chromium with playwright-core, wait for things.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TARGET_DIR = process.env.CARGO_TARGET_DIR || path.join(REPO, 'target');
export const CRETOK_BIN = path.resolve(REPO, process.env.CRETOK_BIN || path.join(TARGET_DIR, 'debug', 'cretok'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = path.resolve(REPO, process.env.ARTIFACTS_DIR || path.join('tests', 'artifacts'));
export const TIMEOUT = 60_000;

// Without these, Chromium on a machine with no general network access hangs on
// connections it opens by itself (updates, sync, QUIC probes).
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage', // containers often have a tiny /dev/shm
];

export function freshDir(prefix) {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Runs `cretok ARGS...` to completion; returns its stdout, failing with its output. */
export function cretok(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(CRETOK_BIN, args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) =>
      code === 0 ? resolve(out) : reject(new Error(`cretok ${args.join(' ')} exited ${code}:\n${out}\n${err}`)),
    );
  });
}

/**
 * Builds the example custom nodes (wit/examples: Template, ConceptPairs,
 * WeightedChoice) into `dataDir/custom_nodes`, where `cretok serve` loads them.
 */
export function installExampleNodes(dataDir) {
  const args = ['run', '--quiet', '-p', 'cretok-componentize', '--', 'workspace', 'wit/examples'];
  for (const crate of ['template', 'pairs', 'weighted-choice']) args.push('-p', crate);
  args.push('--out', path.join(dataDir, 'custom_nodes'));
  return new Promise((resolve, reject) => {
    const child = spawn(process.env.CARGO || 'cargo', args, { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`cargo ${args.join(' ')} exited ${code}:\n${err}`)),
    );
  });
}

/** Starts `cretok serve` on a free port over `dataDir`; resolves to { child, base, dataDir, log }. */
export async function startServer(dataDir, extraArgs = []) {
  assert.ok(fs.existsSync(CRETOK_BIN), `${CRETOK_BIN} is missing: run \`cargo build -p cretok-host\` or set CRETOK_BIN`);
  const args = ['serve', '--port', '0', '--data-dir', dataDir, ...extraArgs];
  if (process.env.FRONT_END_ROOT) args.push('--front-end-root', process.env.FRONT_END_ROOT);
  const child = spawn(CRETOK_BIN, args, {
    cwd: REPO, // `cretok serve` looks for ./.venv/bin/python to find the frontend
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = [];
  readline.createInterface({ input: child.stderr }).on('line', (l) => log.push(l));
  const base = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('cretok serve did not start in time')), TIMEOUT);
    child.on('exit', (code) => reject(new Error(`cretok serve exited (${code}):\n${log.join('\n')}`)));
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const url = line.split(/\s+/).find((w) => w.startsWith('http://'));
      if (url) {
        clearTimeout(timer);
        resolve(url);
      }
    });
  });
  return { child, base, dataDir, log };
}

/** Stops a server from `startServer` and waits until it has exited. */
export async function stopServer(server) {
  if (server.child.exitCode !== null) return;
  const exited = new Promise((resolve) => server.child.once('exit', resolve));
  server.child.kill('SIGTERM');
  await exited;
}

/**
 * Launches Chromium with a fresh profile, allowed to reach only `base`.
 * Resolves to { context, page, profile, problems, wsMessages }: what the page
 * logged as errors, which of our responses failed, and every JSON websocket message.
 */
export async function launchBrowser(base) {
  const profile = freshDir('cretok-chromium-');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1600, height: 1000 },
  });
  context.setDefaultTimeout(TIMEOUT);
  // Only our server exists here: refuse everything else (update checks, CDNs).
  await context.route(
    (url) => !url.href.startsWith(base) && !url.protocol.startsWith('blob') && !url.protocol.startsWith('data'),
    (route) => route.abort('blockedbyclient'),
  );
  const page = context.pages()[0] ?? (await context.newPage());
  const problems = { consoleErrors: [], httpErrors: [], pageErrors: [] };
  const wsMessages = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => problems.pageErrors.push(e.message));
  page.on('response', (r) => {
    if (r.status() >= 400 && r.url().startsWith(base)) {
      problems.httpErrors.push(`${r.status()} ${r.request().method()} ${r.url().slice(base.length)}`);
    }
  });
  page.on('websocket', (ws) => {
    ws.on('framereceived', (f) => {
      if (typeof f.payload !== 'string') return;
      try {
        wsMessages.push(JSON.parse(f.payload));
      } catch {
        /* not JSON */
      }
    });
  });
  return { context, page, profile, problems, wsMessages };
}

/** Closes a browser from `launchBrowser`, printing what went wrong on the page. */
export async function closeBrowser(browser) {
  if (!browser) return;
  const unique = (xs) => [...new Set(xs)];
  const { problems } = browser;
  console.log(`HTTP errors from our server:\n${unique(problems.httpErrors).map((x) => `  ${x}`).join('\n')}`);
  console.log(`console errors:\n${unique(problems.consoleErrors).map((x) => `  ${x.slice(0, 300)}`).join('\n')}`);
  if (problems.pageErrors.length) {
    console.log(`page errors:\n${unique(problems.pageErrors).map((x) => `  ${x.slice(0, 300)}`).join('\n')}`);
  }
  await browser.context.close();
  fs.rmSync(browser.profile, { recursive: true, force: true });
}

/** Opens the editor at `url` and waits until the app and its graph exist. */
export async function openEditor(page, url) {
  const response = await page.goto(url);
  assert.equal(response.status(), 200);
  // Our built-in fallback page (title "CreTok Studio") means no frontend package was found.
  assert.match(
    await page.title(),
    /ComfyUI/,
    'cretok serve did not find the frontend: install it into .venv or set FRONT_END_ROOT',
  );
  await page.waitForFunction(() => window.app?.graph && window.app?.canvas, null, { timeout: TIMEOUT });
  await page.locator('[data-testid="queue-button"]').waitFor({ state: 'visible' });
}

/**
 * Opens gallery workflow `name` from the editor's templates dialog on a blank
 * canvas, and waits until `opened()` holds. `screenshotName`: a screenshot of
 * the dialog before the card is clicked.
 */
export async function openFromTemplatesDialog(page, base, name, opened, screenshotName) {
  const index = await getJson(base, '/templates/index.json');
  const card = index[0].templates.find((t) => t.name === name);
  assert.ok(card, JSON.stringify(index));
  // Start from an empty canvas, so the graph can only come from the template.
  await page.evaluate(() => window.app.extensionManager.command.execute('Comfy.NewBlankWorkflow'));
  await until(async () => (await page.evaluate(() => window.app.graph.nodes.length)) === 0, 'a blank workflow');
  await page.locator('.templates-tab-button').click();
  const title = page.getByText(card.title, { exact: true }).first();
  await title.waitFor({ state: 'visible' });
  if (screenshotName) await screenshot(page, screenshotName);
  await title.click();
  await until(opened, `the ${name} graph opened from the templates dialog`);
}

export function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  return page.screenshot({ path: file }).then(() => console.log(`screenshot: ${file}`));
}

/** Polls `check` until it is truthy, failing after TIMEOUT. */
export async function until(check, what, timeout = TIMEOUT) {
  for (const deadline = Date.now() + timeout; Date.now() < deadline; ) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`timed out waiting for ${what}`);
}

export async function getJson(base, pathname) {
  const r = await fetch(base + pathname);
  assert.equal(r.status, 200, `GET ${pathname} answered ${r.status}`);
  return r.json();
}

/** The gallery: every API-format workflow in workflows/, by name (file name without `.json`). */
export function galleryWorkflows() {
  const dir = path.join(REPO, 'workflows');
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ name: f.slice(0, -'.json'.length), api: JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) }));
}

/** The API graph's nodes as {id: {class_type, inputs}}, without `_meta` (for comparing graphs). */
export function apiNodes(api) {
  return Object.fromEntries(
    Object.entries(api)
      .filter(([, node]) => node && typeof node === 'object' && 'class_type' in node)
      .map(([id, node]) => [id, { class_type: node.class_type, inputs: node.inputs }]),
  );
}

/**
 * `prompt` without the inputs the frontend filled in that `api` leaves out,
 * when they hold the input's default (which the server uses for them anyway).
 */
export function withoutDefaults(prompt, api, schemas) {
  return Object.fromEntries(
    Object.entries(prompt).map(([id, node]) => {
      const given = api[id]?.inputs ?? {};
      const spec = schemas[node.class_type]?.input ?? {};
      const defaultOf = (input) => (spec.required?.[input] ?? spec.optional?.[input])?.[1]?.default;
      const inputs = Object.fromEntries(
        Object.entries(node.inputs).filter(([input, value]) => input in given || value !== defaultOf(input)),
      );
      return [id, { ...node, inputs }];
    }),
  );
}

/**
 * A PNG's image: its header and its inflated pixel stream (IHDR + IDAT), without
 * the text chunks (the embedded prompt and workflow). Equal streams mean equal pixels.
 */
export function pngImageData(file) {
  const bytes = fs.readFileSync(file);
  assert.equal(bytes.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', `${file} is not a PNG`);
  let header;
  const idat = [];
  for (let at = 8; at < bytes.length; ) {
    const length = bytes.readUInt32BE(at);
    const type = bytes.subarray(at + 4, at + 8).toString('latin1');
    const data = bytes.subarray(at + 8, at + 8 + length);
    if (type === 'IHDR') header = Buffer.from(data);
    if (type === 'IDAT') idat.push(data);
    at += 12 + length;
  }
  return Buffer.concat([header, zlib.inflateSync(Buffer.concat(idat))]);
}
