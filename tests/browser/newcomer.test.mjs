// A newcomer's first hour in the browser: from an empty data directory, the
// README's commands (`cretok dev tiny-checkpoint`, `cretok run
// workflows/cretok_train_and_blend.json`), then `cretok serve`. A new browser
// opens blend_pair, which runs with the freshly trained token to a finished
// image; a second browser (its own profile, after the first saved settings)
// opens blend_pair too, not ComfyUI's default graph, while the first keeps a
// workflow of its own across a reload.
// Run through tests/browser/run.sh (it documents the installs and environment).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';

import {
  REPO,
  apiNodes,
  closeBrowser,
  cretok,
  freshDir,
  getJson,
  launchBrowser,
  openEditor,
  screenshot,
  startServer,
  stopServer,
  until,
  withoutDefaults,
} from './lib.mjs';

const readApi = (name) => JSON.parse(fs.readFileSync(path.join(REPO, 'workflows', `${name}.json`), 'utf8'));
const BLEND_PAIR = readApi('blend_pair');
const HELLO_TEXT = readApi('hello_text');

let dataDir;
let server;
let schemas;
const browsers = [];

/** Whether `page`'s canvas holds the API workflow `api`, as written. */
async function shows(page, api) {
  const { output } = await page.evaluate(() => window.app.graphToPrompt());
  return isDeepStrictEqual(withoutDefaults(apiNodes(output), apiNodes(api), schemas), apiNodes(api));
}

async function newBrowser() {
  const browser = await launchBrowser(server.base);
  browsers.push(browser);
  return browser;
}

before(async () => {
  dataDir = freshDir('cretok-newcomer-');
  // The README's commands, literally, over an empty data directory.
  await cretok(['dev', 'tiny-checkpoint', '--data-dir', dataDir]);
  const out = await cretok(['run', 'workflows/cretok_train_and_blend.json', '--data-dir', dataDir]);
  assert.match(out, /wrote .*lettuce_mantis/, out);
  const token = path.join(dataDir, 'models', 'embeddings', 'cretok.safetensors');
  assert.ok(fs.existsSync(token), `the trained token is not where blend_pair loads it: ${token}`);
  server = await startServer(dataDir);
  schemas = await getJson(server.base, '/api/object_info');
});

after(async () => {
  for (const browser of browsers) await closeBrowser(browser);
  if (server) await stopServer(server);
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

test('a new browser opens blend_pair and runs it with the freshly trained token', async () => {
  const { page, wsMessages } = await newBrowser();
  await openEditor(page, server.base + '/');
  await until(() => shows(page, BLEND_PAIR), 'the blend-pair graph on the canvas');
  const token = await page.evaluate(() => window.app.graph.getNodeById(2).widgets[0].value);
  assert.equal(token, 'cretok.safetensors');

  const queued = page.waitForResponse((r) => r.url().endsWith('/api/prompt') && r.request().method() === 'POST');
  await page.locator('[data-testid="queue-button"]').click();
  const { prompt_id: promptId } = await (await queued).json();
  const done = () => wsMessages.some((m) => m.data?.prompt_id === promptId && /execution_(success|error)/.test(m.type));
  await until(done, 'the blend to finish');
  const entry = (await getJson(server.base, `/api/history/${promptId}`))[promptId];
  assert.equal(entry.status.status_str, 'success', JSON.stringify(entry.status));
  const [image] = entry.outputs['7'].images;
  await page.waitForFunction(
    (filename) => window.app.graph.getNodeById(7)?.imgs?.some((img) => img.src.includes(encodeURIComponent(filename))),
    image.filename,
  );
  await page.evaluate(() => window.app.extensionManager?.command?.execute('Comfy.Canvas.FitView'));
  await screenshot(page, 'newcomer-blend-with-trained-token.png');
});

test('a browser with a workflow of its own keeps it; a second browser still opens blend_pair', async () => {
  const [first] = browsers;
  const helloUi = await getJson(server.base, '/templates/hello_text.json');
  await first.page.evaluate((graph) => window.app.loadGraphData(graph), helloUi);
  await until(() => shows(first.page, HELLO_TEXT), 'hello_text on the first canvas');
  // Give the frontend time to persist the open workflow, then reload it.
  await new Promise((r) => setTimeout(r, 1500));
  await openEditor(first.page, server.base + '/');
  await until(() => shows(first.page, HELLO_TEXT), 'the first browser restoring its own workflow');

  const settings = await getJson(server.base, '/api/settings');
  assert.equal(settings['Comfy.TutorialCompleted'], true);
  const second = await newBrowser();
  await openEditor(second.page, server.base + '/');
  await until(() => shows(second.page, BLEND_PAIR), 'the blend-pair graph in a second browser');
  const types = await second.page.evaluate(() => window.app.graph.nodes.map((n) => n.type));
  assert.ok(!types.includes('UNETLoader'), `ComfyUI's default graph: ${types}`);
  await screenshot(second.page, 'newcomer-second-browser.png');
});
