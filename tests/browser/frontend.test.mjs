// The real ComfyUI web frontend (pip `comfyui-frontend-package`) against
// `cretok serve`, in headless Debian Chromium driven by playwright-core.
// Run through tests/browser/run.sh (it documents the installs).
//
// Environment:
//   CRETOK_BIN       the cretok binary (default: target/debug/cretok, or $CARGO_TARGET_DIR/debug/cretok)
//   FRONT_END_ROOT   the frontend's static/ folder (default: let `cretok serve` find .venv's package)
//   CHROMIUM         the browser (default: /usr/bin/chromium)
//   ARTIFACTS_DIR    where screenshots go (default: tests/artifacts)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TARGET_DIR = process.env.CARGO_TARGET_DIR || path.join(REPO, 'target');
const CRETOK_BIN = path.resolve(REPO, process.env.CRETOK_BIN || path.join(TARGET_DIR, 'debug', 'cretok'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.resolve(REPO, process.env.ARTIFACTS_DIR || path.join('tests', 'artifacts'));
const TIMEOUT = 60_000;

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

// The graph the test queues: our native nodes only, with a Delay so that the
// run lasts long enough to watch the UI report it as running.
const OUTPUT_TEXT = 'a creative mixture that resembles a lettuce and a mantis';
function browserGraph() {
  const hello = JSON.parse(fs.readFileSync(path.join(REPO, 'workflows', 'hello_text.json'), 'utf8'));
  hello['4'] = {
    class_type: 'Delay',
    inputs: { text: ['2', 0], milliseconds: 3000 },
    _meta: { title: 'Wait a moment' },
  };
  hello['3'].inputs.text = ['4', 0];
  return hello;
}

let server; // { child, base, dataDir, log }
let context; // playwright BrowserContext
let profile; // Chromium's fresh --user-data-dir
let page;
const problems = { consoleErrors: [], httpErrors: [], pageErrors: [] };
const wsMessages = [];

function shot(name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name);
  return page.screenshot({ path: file }).then(() => console.log(`screenshot: ${file}`));
}

async function startServer() {
  assert.ok(fs.existsSync(CRETOK_BIN), `${CRETOK_BIN} is missing: run \`cargo build -p cretok-host\` or set CRETOK_BIN`);
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cretok-browser-'));
  const args = ['serve', '--port', '0', '--data-dir', dataDir];
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

/** Polls `check` until it is truthy, failing after TIMEOUT. */
async function until(check, what) {
  for (const deadline = Date.now() + TIMEOUT; Date.now() < deadline; ) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`timed out waiting for ${what}`);
}

async function api(pathname) {
  const r = await fetch(server.base + pathname);
  assert.equal(r.status, 200, `GET ${pathname} answered ${r.status}`);
  return r.json();
}

before(async () => {
  server = await startServer();
  console.log(`cretok serve at ${server.base} (data dir ${server.dataDir})`);

  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'cretok-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1600, height: 1000 },
  });
  context.setDefaultTimeout(TIMEOUT);
  // Only our server exists here: refuse everything else (update checks, CDNs).
  await context.route(
    (url) => !url.href.startsWith(server.base) && !url.protocol.startsWith('blob') && !url.protocol.startsWith('data'),
    (route) => route.abort('blockedbyclient'),
  );
  page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error') problems.consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => problems.pageErrors.push(e.message));
  page.on('response', (r) => {
    if (r.status() >= 400 && r.url().startsWith(server.base)) {
      problems.httpErrors.push(`${r.status()} ${r.request().method()} ${r.url().slice(server.base.length)}`);
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
});

after(async () => {
  // What the frontend asked for that we do not serve (expected: user.css,
  // empty userdata folders, comfy.templates.json) and what it logged.
  const unique = (xs) => [...new Set(xs)];
  console.log(`HTTP errors from our server:\n${unique(problems.httpErrors).map((x) => `  ${x}`).join('\n')}`);
  console.log(`console errors:\n${unique(problems.consoleErrors).map((x) => `  ${x.slice(0, 300)}`).join('\n')}`);
  if (problems.pageErrors.length) console.log(`page errors:\n${unique(problems.pageErrors).map((x) => `  ${x.slice(0, 300)}`).join('\n')}`);
  await context?.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
  if (server) {
    server.child.kill('SIGTERM');
    fs.rmSync(server.dataDir, { recursive: true, force: true });
  }
});

test('the ComfyUI frontend loads from cretok serve', async () => {
  const response = await page.goto(server.base + '/');
  assert.equal(response.status(), 200);
  // Our built-in fallback page (title "CreTok Studio") means no frontend package was found.
  assert.equal(
    await page.title(),
    'ComfyUI',
    'cretok serve did not find the frontend: install it into .venv or set FRONT_END_ROOT',
  );
  await page.waitForFunction(() => window.app?.graph && window.app?.canvas, null, { timeout: TIMEOUT });
  await page.locator('[data-testid="queue-button"]').waitFor({ state: 'visible' });
  // The node definitions came from our /object_info.
  const types = await page.evaluate(() => Object.keys(window.LiteGraph.registered_node_types));
  for (const name of ['SaveText', 'StringConcatenate', 'PrimitiveString', 'Delay']) {
    assert.ok(types.includes(name), `${name} is not registered in the frontend: ${types}`);
  }
  await shot('frontend-loaded.png');
});

test('the node library lists our nodes', async () => {
  await page.locator('[data-testid="node-library-tab-button"]').click();
  const library = page.locator('.side-bar-panel, [class*="sidebar"], [role="tree"]').first();
  await library.waitFor({ state: 'visible' });
  // Our categories appear as folders.
  await page.getByText('utils', { exact: true }).first().waitFor({ state: 'visible' });
  // Search narrows the library to our node.
  const search = page.getByPlaceholder(/search/i).first();
  await search.fill('Concatenate');
  await page.getByText('Concatenate', { exact: true }).first().waitFor({ state: 'visible' });
  await shot('frontend-node-library.png');
  await page.locator('[data-testid="node-library-tab-button"]').click(); // close it again
});

test('a graph of our nodes runs from the Run button and the UI shows it finishing', async () => {
  const graph = browserGraph();
  await page.evaluate((g) => window.app.loadApiJson(g, 'hello_text.json'), graph);
  const loaded = await page.evaluate(() => window.app.graph.nodes.map((n) => n.type).sort());
  assert.deepEqual(loaded, ['Delay', 'PrimitiveString', 'SaveText', 'StringConcatenate']);
  // Show the whole graph (the output node included) in the screenshots.
  await page.evaluate(() => window.app.extensionManager?.command?.execute('Comfy.Canvas.FitView'));
  await shot('frontend-graph.png');

  const queued = page.waitForResponse((r) => r.url().endsWith('/api/prompt') && r.request().method() === 'POST');
  await page.locator('[data-testid="queue-button"]').click();
  const response = await queued;
  const body = await response.json();
  assert.equal(response.status(), 200, JSON.stringify(body));
  const promptId = body.prompt_id;
  assert.ok(promptId, JSON.stringify(body));

  // While the Delay runs, the queue button reports one active job.
  const toggle = page.locator('[data-testid="queue-overlay-toggle"]');
  await assert.doesNotReject(
    toggle.filter({ hasText: /1 active/ }).waitFor({ state: 'visible', timeout: 10_000 }),
    'the UI never showed the job as active',
  );
  await shot('frontend-running.png');

  // Finished: the server's history says success ...
  let entry;
  await until(async () => (entry = (await api(`/api/history/${promptId}`))[promptId]), 'the prompt in history');
  assert.equal(entry.status.status_str, 'success', JSON.stringify(entry.status));
  assert.deepEqual(entry.outputs['3'].text, [OUTPUT_TEXT]);

  // ... the page's websocket got the run's events ...
  const mine = () => wsMessages.filter((m) => m.data?.prompt_id === promptId).map((m) => m.type);
  await until(() => mine().includes('execution_success'), 'execution_success on the page websocket');
  for (const kind of ['execution_start', 'executing', 'progress', 'executed', 'execution_success']) {
    assert.ok(mine().includes(kind), `the page never received ${kind}: ${mine()}`);
  }

  // ... the UI shows no active job and the output text on the SaveText node ...
  await toggle.filter({ hasText: /0 active/ }).waitFor({ state: 'visible' });
  await page.waitForFunction(
    (text) => {
      const node = window.app.graph.nodes.find((n) => n.type === 'SaveText');
      const shown = [...document.querySelectorAll('textarea')].some((t) => t.value.includes(text));
      return shown || JSON.stringify(node?.widgets?.map((w) => w.value) ?? []).includes(text);
    },
    OUTPUT_TEXT,
    { timeout: TIMEOUT },
  );

  // ... and the jobs panel lists the job as completed.
  const jobs = await api('/api/jobs?status=completed,failed,cancelled&limit=64&offset=0');
  assert.equal(jobs.jobs[0]?.id, promptId);
  assert.equal(jobs.jobs[0]?.status, 'completed');
  await shot('frontend-finished.png');
  await toggle.click();
  await page.getByText(/Job #\d+/).first().waitFor({ state: 'visible' });
  await shot('frontend-job-queue.png');

  // The frontend parsed every jobs answer (it logs "[Jobs API]" when one has the wrong shape).
  const jobsErrors = problems.consoleErrors.filter((e) => e.includes('Jobs API'));
  assert.deepEqual(jobsErrors, []);
});
