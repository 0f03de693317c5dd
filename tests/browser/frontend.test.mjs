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
import fs from 'node:fs';
import path from 'node:path';

import {
  REPO,
  TIMEOUT,
  closeBrowser,
  freshDir,
  getJson,
  launchBrowser,
  openEditor,
  screenshot,
  startServer,
  stopServer,
  until,
} from './lib.mjs';

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

let server;
let browser;
let page;
let problems;
let wsMessages;

const shot = (name) => screenshot(page, name);
const api = (pathname) => getJson(server.base, pathname);

before(async () => {
  server = await startServer(freshDir('cretok-browser-'));
  console.log(`cretok serve at ${server.base} (data dir ${server.dataDir})`);
  browser = await launchBrowser(server.base);
  ({ page, problems, wsMessages } = browser);
});

after(async () => {
  // What the frontend asked for that we do not serve (expected: user.css,
  // empty userdata folders, comfy.templates.json) and what it logged.
  await closeBrowser(browser);
  if (server) {
    await stopServer(server);
    fs.rmSync(server.dataDir, { recursive: true, force: true });
  }
});

test('the ComfyUI frontend loads from cretok serve', async () => {
  await openEditor(page, server.base + '/');
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
