// Sandboxed custom nodes in the editor (issue 13): the example WASM nodes
// (wit/examples, built with cargo into the data folder's custom_nodes/) are
// installed, the template_blend workflow opens from the Templates dialog with
// the WASM Template node's growing `vars` inputs, a placeholder input is added
// in the editor (a new text connected to the next free `vars` input, and its
// `{var_N}` written into the template), and Run shows the blended image;
// pairs_sweep opens with ConceptPairs' list outputs (cretok:node@0.3.0) drawn
// as lists, and Run loops over every pair into one grid.
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
  installExampleNodes,
  launchBrowser,
  openEditor,
  openFromTemplatesDialog,
  screenshot,
  startServer,
  stopServer,
  until,
  withoutDefaults,
} from './lib.mjs';

const TEMPLATE_BLEND = JSON.parse(fs.readFileSync(path.join(REPO, 'workflows', 'template_blend.json'), 'utf8'));
const TEMPLATE_ID = Object.keys(TEMPLATE_BLEND).find((id) => TEMPLATE_BLEND[id].class_type === 'Template');
const SAVE_ID = Object.keys(TEMPLATE_BLEND).find((id) => TEMPLATE_BLEND[id].class_type === 'SaveImage');
const ADDED_TEXT = 'glowing';
const PAIRS_SWEEP = JSON.parse(fs.readFileSync(path.join(REPO, 'workflows', 'pairs_sweep.json'), 'utf8'));
const PAIRS_ID = Object.keys(PAIRS_SWEEP).find((id) => PAIRS_SWEEP[id].class_type === 'ConceptPairs');
const SWEEP_SAVE_ID = Object.keys(PAIRS_SWEEP).find((id) => PAIRS_SWEEP[id].class_type === 'SaveImage');

let dataDir;
let server;
let browser;
let page;
let schemas;

before(async () => {
  dataDir = freshDir('cretok-custom-nodes-');
  await installExampleNodes(dataDir);
  await cretok(['dev', 'tiny-checkpoint', '--data-dir', dataDir]);
  await cretok(['train', '--checkpoint', 'tiny-sd3.safetensors', '--steps', '2', '--pairs-per-step', '2', '--quiet', '--data-dir', dataDir]);
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

/** The graph on the canvas as an API prompt, without the defaults the frontend fills in. */
async function canvasPrompt(workflow = TEMPLATE_BLEND) {
  const { output } = await page.evaluate(() => window.app.graphToPrompt());
  return withoutDefaults(apiNodes(output), apiNodes(workflow), schemas);
}

/** Opens gallery workflow `name` from the templates dialog, until the canvas holds `workflow`. */
function openGalleryWorkflow(name, workflow) {
  const opened = async () => isDeepStrictEqual(await canvasPrompt(workflow), apiNodes(workflow));
  return openFromTemplatesDialog(page, server.base, name, opened);
}

/** The names of the Template node's inputs on the canvas, and which are linked. */
function templateInputs() {
  return page.evaluate((id) => {
    const node = window.app.graph.getNodeById(Number(id));
    return node?.inputs.map((input) => [input.name, input.link != null]) ?? [];
  }, TEMPLATE_ID);
}

/** Clicks Run; resolves to the queued prompt id once it has run. */
async function queueFromTheEditor() {
  const queued = page.waitForResponse((r) => r.url().endsWith('/api/prompt') && r.request().method() === 'POST');
  await page.locator('[data-testid="queue-button"]').click();
  const response = await queued;
  const body = await response.json();
  assert.equal(response.status(), 200, JSON.stringify(body));
  const mine = () => browser.wsMessages.filter((m) => m.data?.prompt_id === body.prompt_id);
  await until(() => mine().some((m) => ['execution_success', 'execution_error'].includes(m.type)), 'the run to end');
  const error = mine().find((m) => m.type === 'execution_error');
  assert.ok(!error, JSON.stringify(error?.data));
  return body.prompt_id;
}

test('the example WASM nodes are installed, Template with a growing vars input group', async () => {
  const vars = schemas.Template?.input?.optional?.vars;
  assert.equal(vars?.[0], 'COMFY_AUTOGROW_V3', JSON.stringify(schemas.Template));
  assert.equal(vars[1].template.prefix, 'var_');
  assert.ok(schemas.ConceptPairs, 'ConceptPairs is not installed');
});

test('template_blend opens from the templates dialog with its placeholders connected', async () => {
  await openEditor(page, server.base + '/');
  // On first start the editor opens blend_pair; let it, then start blank.
  await until(async () => (await page.evaluate(() => window.app.graph.nodes.length)) > 0, 'the first-start workflow');
  await openGalleryWorkflow('template_blend', TEMPLATE_BLEND);
  // Three placeholders connected, and the group has grown a free fourth input.
  const vars = (await templateInputs()).filter(([name]) => name.startsWith('vars.'));
  assert.deepEqual(vars, [
    ['vars.var_0', true],
    ['vars.var_1', true],
    ['vars.var_2', true],
    ['vars.var_3', false],
  ]);
  await page.evaluate(() => window.app.extensionManager?.command?.execute('Comfy.Canvas.FitView'));
  await screenshot(page, 'custom-nodes-template-blend.png');
});

test('a placeholder input added in the editor runs and the image is shown', async () => {
  // A new text node connected to the free input, and its placeholder in the template.
  await page.evaluate(
    ({ id, text }) => {
      const template = window.app.graph.getNodeById(Number(id));
      const word = window.LiteGraph.createNode('PrimitiveString');
      word.pos = [template.pos[0] - 300, template.pos[1] + 250];
      window.app.graph.add(word);
      word.widgets.find((w) => w.name === 'value').value = text;
      word.connect(0, template, template.inputs.findIndex((input) => input.name === 'vars.var_3'));
      const widget = template.widgets.find((w) => w.name === 'template');
      widget.value = `${widget.value}, {var_3}`;
    },
    { id: TEMPLATE_ID, text: ADDED_TEXT },
  );
  await until(
    async () => (await templateInputs()).some(([name, linked]) => name === 'vars.var_4' && !linked),
    'the vars group growing a fifth input',
  );
  const prompt = await canvasPrompt();
  const template = prompt[TEMPLATE_ID].inputs;
  assert.match(template.template, /\{var_3\}$/);
  const [wordId] = template['vars.var_3'];
  assert.deepEqual(prompt[wordId], { class_type: 'PrimitiveString', inputs: { value: ADDED_TEXT } });

  const promptId = await queueFromTheEditor();
  const entry = (await getJson(server.base, `/api/history/${promptId}`))[promptId];
  assert.equal(entry.status.status_str, 'success', JSON.stringify(entry.status));
  assert.deepEqual(entry.prompt[2][TEMPLATE_ID].inputs['vars.var_3'], [wordId, 0]);
  const [image] = entry.outputs[SAVE_ID].images;
  await page.waitForFunction(
    ({ id, filename }) => {
      const node = window.app.graph.getNodeById(Number(id));
      return node?.imgs?.some((img) => img.src.includes(encodeURIComponent(filename)) && img.naturalWidth === 96);
    },
    { id: SAVE_ID, filename: image.filename },
  );
  await page.evaluate(() => window.app.extensionManager?.command?.execute('Comfy.Canvas.FitView'));
  await screenshot(page, 'custom-nodes-template-blend-finished.png');
});

test('pairs_sweep opens with ConceptPairs list outputs and runs one blend per pair', async () => {
  assert.deepEqual(schemas.ConceptPairs.output_is_list, [false, false, false, false, true, true]);
  await openGalleryWorkflow('pairs_sweep', PAIRS_SWEEP);
  // The editor draws list outputs with LiteGraph's grid shape.
  const shapes = await page.evaluate(
    (id) => window.app.graph.getNodeById(Number(id)).outputs.map((o) => [o.name, o.shape === window.LiteGraph.GRID_SHAPE]),
    PAIRS_ID,
  );
  assert.deepEqual(shapes.filter(([, grid]) => grid).map(([name]) => name), ['every_a', 'every_b']);

  const promptId = await queueFromTheEditor();
  const entry = (await getJson(server.base, `/api/history/${promptId}`))[promptId];
  assert.equal(entry.status.status_str, 'success', JSON.stringify(entry.status));
  const [image] = entry.outputs[SWEEP_SAVE_ID].images;
  // Three pairs of mantis, chair, ladybug: a grid of three 96-pixel cells and padding.
  await page.waitForFunction(
    ({ id, filename }) => {
      const node = window.app.graph.getNodeById(Number(id));
      return node?.imgs?.some((img) => img.src.includes(encodeURIComponent(filename)) && img.naturalWidth > 3 * 96);
    },
    { id: SWEEP_SAVE_ID, filename: image.filename },
  );
  await page.evaluate(() => window.app.extensionManager?.command?.execute('Comfy.Canvas.FitView'));
  await screenshot(page, 'custom-nodes-pairs-sweep-finished.png');
});
