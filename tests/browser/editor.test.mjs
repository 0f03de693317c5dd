// The editor end to end on the tiny SD3 checkpoint (issue 4's acceptance test):
// the real ComfyUI frontend served by `cretok serve` opens the blend-pair
// workflow from our gallery, runs it with per-step progress and shows the
// image, re-runs only what an edited prompt changes, saves the graph in the
// editor's UI format (which `cretok run` then runs headless to the same
// pixels as the API file), keeps a workflow saved from the editor across
// a server restart, and runs SD3 text to image written with ComfyUI's node
// names with per-step progress and latent previews.
// Run through tests/browser/run.sh (it documents the installs and environment).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';

import {
  ARTIFACTS,
  REPO,
  apiNodes,
  closeBrowser,
  cretok,
  freshDir,
  getJson,
  launchBrowser,
  openEditor,
  openFromTemplatesDialog,
  pngImageData,
  screenshot,
  startServer,
  stopServer,
  until,
  withoutDefaults,
} from './lib.mjs';

const BLEND_PAIR = JSON.parse(fs.readFileSync(path.join(REPO, 'workflows', 'blend_pair.json'), 'utf8'));
const STEPS = BLEND_PAIR['5'].inputs.steps;
const EDITED_PROMPT = 'a photo of a <CreTok> mixture that resembles a teapot and an owl';
const FIXTURE = path.join(REPO, 'tests', 'fixtures', 'ui', 'blend_pair.ui.json');
const SAVED_NAME = 'my blend';

let dataDir;
let server;
let browser;
let page;
let schemas;

/** The messages of `promptId` the page's websocket received. */
const messagesOf = (promptId) => browser.wsMessages.filter((m) => m.data?.prompt_id === promptId);

/** The graph on the canvas as an API prompt, without the defaults the frontend fills in. */
async function canvasPrompt() {
  const { output } = await page.evaluate(() => window.app.graphToPrompt());
  return withoutDefaults(apiNodes(output), apiNodes(BLEND_PAIR), schemas);
}

/** Whether the canvas holds the blend-pair graph as written in workflows/blend_pair.json. */
const showsBlendPair = async () => isDeepStrictEqual(await canvasPrompt(), apiNodes(BLEND_PAIR));

/** Clicks Run; resolves to the queued prompt id. */
async function queueFromTheEditor() {
  const queued = page.waitForResponse((r) => r.url().endsWith('/api/prompt') && r.request().method() === 'POST');
  await page.locator('[data-testid="queue-button"]').click();
  const response = await queued;
  const body = await response.json();
  assert.equal(response.status(), 200, JSON.stringify(body));
  assert.ok(body.prompt_id, JSON.stringify(body));
  await until(() => messagesOf(body.prompt_id).some((m) => m.type === 'execution_success'), 'execution_success');
  return body.prompt_id;
}

before(async () => {
  dataDir = freshDir('cretok-editor-');
  await cretok(['dev', 'tiny-checkpoint', '--data-dir', dataDir]);
  await cretok(['train', '--checkpoint', 'tiny-sd3.safetensors', '--steps', '5', '--pairs-per-step', '2', '--quiet', '--data-dir', dataDir]);
  server = await startServer(dataDir);
  console.log(`cretok serve at ${server.base} (data dir ${dataDir})`);
  schemas = await getJson(server.base, '/api/object_info');
  browser = await launchBrowser(server.base);
  page = browser.page;
});

after(async () => {
  await closeBrowser(browser);
  if (server) await stopServer(server);
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

test('on first start the editor opens the blend-pair workflow, not ComfyUI default graph', async () => {
  await openEditor(page, server.base + '/');
  await until(showsBlendPair, 'the blend-pair graph on the canvas');
  await screenshot(page, 'editor-first-start.png');
});

test('the templates dialog lists the gallery and opens blend_pair from it', async () => {
  await openFromTemplatesDialog(page, server.base, 'blend_pair', showsBlendPair, 'editor-templates.png');
  await page.evaluate(() => window.app.extensionManager?.command?.execute('Comfy.Canvas.FitView'));
});

test('the frontend saves the blend-pair graph in its UI format (the committed fixture)', async () => {
  const saved = await saveFromTheEditor('blend_pair capture');
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  fs.writeFileSync(path.join(ARTIFACTS, 'blend_pair.ui.json'), JSON.stringify(saved, null, 2) + '\n');
  const fixture = JSON.parse(fs.readFileSync(FIXTURE, 'utf8'));
  const widgets = (ui) => Object.fromEntries(ui.nodes.map((n) => [n.id, [n.type, n.widgets_values]]));
  assert.deepEqual(widgets(saved), widgets(fixture), `${FIXTURE} is not what the frontend saves for blend_pair`);
  assert.deepEqual(saved.links, fixture.links);
});

test('Run shows per-step progress and the final image in the editor', async () => {
  // What the editor's API client hands its UI per step, and the progress it
  // shows in the tab title while running ("[50%] *blend_pair - ComfyUI").
  await page.evaluate(() => {
    window.__progress = [];
    window.app.api.addEventListener('progress', (e) => window.__progress.push(e.detail));
    window.__titles = [];
    new MutationObserver(() => window.__titles.push(document.title)).observe(document.querySelector('title'), {
      childList: true,
      characterData: true,
      subtree: true,
    });
  });
  const promptId = await queueFromTheEditor();

  const perStep = Array.from({ length: STEPS }, (_, i) => [i + 1, STEPS]);
  const steps = messagesOf(promptId).filter((m) => m.type === 'progress' && m.data.node === '5');
  assert.deepEqual(steps.map((m) => [m.data.value, m.data.max]), perStep, 'one progress message per sampling step');
  const shown = await page.evaluate(() => window.__progress.filter((p) => p.node === '5').map((p) => [p.value, p.max]));
  assert.deepEqual(shown, perStep, 'the editor received each step');
  const titles = await page.evaluate(() => window.__titles);
  assert.ok(
    titles.some((t) => /^\[([1-9]\d?)%\]/.test(t)),
    `the editor never showed the run's progress: ${JSON.stringify(titles)}`,
  );

  const entry = (await getJson(server.base, `/api/history/${promptId}`))[promptId];
  assert.equal(entry.status.status_str, 'success', JSON.stringify(entry.status));
  const [image] = entry.outputs['7'].images;
  // The SaveImage node shows that image, loaded at the sampled size.
  await page.waitForFunction(
    (filename) => {
      const node = window.app.graph.getNodeById(7);
      return node?.imgs?.some((img) => img.src.includes(encodeURIComponent(filename)) && img.naturalWidth === 96);
    },
    image.filename,
  );
  await page.evaluate(() => window.app.extensionManager?.command?.execute('Comfy.Canvas.FitView'));
  await screenshot(page, 'editor-blend-pair-finished.png');
});

test('after editing the prompt, a re-run executes only the nodes after it (LoadSD3 cached)', async () => {
  // The prompt's multiline widget is a textarea over the canvas.
  const index = await page.evaluate(
    (text) => [...document.querySelectorAll('textarea')].findIndex((t) => t.value === text),
    BLEND_PAIR['3'].inputs.text,
  );
  assert.ok(index >= 0, 'no textarea shows the prompt');
  await page.locator('textarea').nth(index).fill(EDITED_PROMPT);
  assert.equal((await canvasPrompt())['3'].inputs.text, EDITED_PROMPT);

  const promptId = await queueFromTheEditor();
  const mine = messagesOf(promptId);
  const executed = mine.filter((m) => m.type === 'executing' && m.data.node !== null).map((m) => m.data.node);
  const cached = mine.find((m) => m.type === 'execution_cached')?.data.nodes ?? [];
  assert.deepEqual([...new Set(executed)].sort(), ['3', '5', '6', '7'], 'executed nodes');
  assert.deepEqual([...cached].sort(), ['1', '2', '4'], 'cached nodes');

  const entry = (await getJson(server.base, `/api/history/${promptId}`))[promptId];
  assert.equal(entry.prompt[2]['3'].inputs.text, EDITED_PROMPT);
  assert.equal(entry.status.status_str, 'success');
  await screenshot(page, 'editor-blend-pair-rerun.png');
});

/** Runs `file` headless with `cretok run` on the test's data folder; returns the PNG it wrote. */
async function runHeadless(file) {
  const out = await cretok(['run', file, '--data-dir', dataDir]);
  const png = out.match(/^wrote (.+\.png)$/m)?.[1];
  assert.ok(png, `cretok run ${file} wrote no PNG:\n${out}`);
  return png;
}

test('the UI file the frontend saved runs headless with the pixels of the API file', async () => {
  const fromApi = pngImageData(await runHeadless(path.join(REPO, 'workflows', 'blend_pair.json')));
  for (const ui of [path.join(ARTIFACTS, 'blend_pair.ui.json'), FIXTURE]) {
    const fromUi = pngImageData(await runHeadless(ui));
    assert.ok(fromUi.equals(fromApi), `${ui} gave other pixels than workflows/blend_pair.json (same seed)`);
  }
});

/** Saves the open workflow under `name` with the editor's Save As; returns the saved file. */
async function saveFromTheEditor(name) {
  // Not awaited in the page: the command waits for the name asked below.
  await page.evaluate(() => {
    window.app.extensionManager.command.execute('Comfy.SaveWorkflowAs');
  });
  const input = page.locator('[role="dialog"][data-dialog-key="global-prompt"] input').first();
  await input.waitFor({ state: 'visible' });
  await input.fill(name);
  await input.press('Enter');
  const file = `/api/userdata/${encodeURIComponent(`workflows/${name}.json`)}`;
  let saved;
  await until(async () => {
    const r = await fetch(server.base + file);
    if (r.status === 200) saved = await r.json();
    return saved;
  }, `${file} saved`);
  return saved;
}

test('a workflow saved from the editor is there after a server restart', async () => {
  const saved = await saveFromTheEditor(SAVED_NAME);
  assert.equal(saved.nodes.find((n) => n.id === 3).widgets_values[0], EDITED_PROMPT);

  await closeBrowser(browser);
  await stopServer(server);
  server = await startServer(dataDir);
  // A fresh browser profile: nothing of the workflow is left on the client side.
  browser = await launchBrowser(server.base);
  page = browser.page;
  await openEditor(page, server.base + '/');

  await page.locator('[data-testid="workflows-tab-button"]').click();
  const entry = page.getByText(SAVED_NAME, { exact: true }).first();
  await entry.waitFor({ state: 'visible' });
  await screenshot(page, 'editor-saved-workflows.png');
  await entry.click();
  await until(async () => (await canvasPrompt())['3']?.inputs.text === EDITED_PROMPT, 'the saved workflow on the canvas');
  await screenshot(page, 'editor-saved-workflow-reopened.png');
});

test('SD3 text to image with ComfyUI node names runs in the editor with per-step progress and previews', async () => {
  const txt2img = JSON.parse(fs.readFileSync(path.join(REPO, 'workflows', 'sd3_txt2img.json'), 'utf8'));
  const sampler = Object.keys(txt2img).find((id) => txt2img[id].class_type === 'KSampler');
  const steps = txt2img[sampler].inputs.steps;
  await openEditor(page, server.base + '/?template=sd3_txt2img');
  await until(
    async () => (await page.evaluate(() => window.app.graph.nodes.map((n) => n.type))).includes('KSampler'),
    'the sd3_txt2img graph on the canvas',
  );
  // Previews are off unless asked for, as in ComfyUI: the editor's "Live
  // preview method" setting sends extra_data.preview_method with the prompt.
  await page.evaluate(() => window.app.ui.settings.setSettingValueAsync('Comfy.Execution.PreviewMethod', 'latent2rgb'));
  await page.evaluate(() => {
    window.__previews = [];
    window.app.api.addEventListener('b_preview_with_metadata', (e) =>
      window.__previews.push({ node: e.detail.nodeId, type: e.detail.blob.type, size: e.detail.blob.size }),
    );
  });
  const promptId = await queueFromTheEditor();

  const progress = messagesOf(promptId).filter((m) => m.type === 'progress' && m.data.node === sampler);
  assert.deepEqual(
    progress.map((m) => [m.data.value, m.data.max]),
    Array.from({ length: steps }, (_, i) => [i + 1, steps]),
    'one progress message per KSampler step',
  );
  const previews = await page.evaluate(() => window.__previews);
  assert.ok(previews.length >= 1, 'the editor received no latent preview');
  for (const p of previews) {
    assert.equal(p.node, sampler, JSON.stringify(p));
    assert.match(p.type, /^image\//, JSON.stringify(p));
    assert.ok(p.size > 0, JSON.stringify(p));
  }
  await page.evaluate(() => window.app.extensionManager?.command?.execute('Comfy.Canvas.FitView'));
  await screenshot(page, 'editor-sd3-txt2img-finished.png');
});
