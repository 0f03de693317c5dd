// Writes workflows/ui/NAME.json, the editor (UI) form of each gallery workflow
// workflows/NAME.json, as laid out and saved by the real ComfyUI frontend:
// it loads the API file with the frontend's own "load API JSON", checks that
// the graph converts back to the same API prompt, and saves the graph. A
// workflow the editor cannot hold as written is skipped with a message.
// `cretok serve` offers these files in the editor's templates dialog.
//
// Run after adding or changing a gallery workflow (same setup as run.sh):
//   bash tests/browser/run.sh --export-ui-workflows
// The server gets the example custom nodes (wit/examples, built with cargo);
// a workflow using node types the server does not have is skipped with a message.

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
  galleryWorkflows,
  installExampleNodes,
  launchBrowser,
  openEditor,
  startServer,
  stopServer,
  withoutDefaults,
} from './lib.mjs';

const OUT_DIR = path.join(REPO, 'workflows', 'ui');

/** Loads `api` through the frontend (seeds fixed) and returns { ui, prompt }: the saved graph and its API form. */
function convertInPage(page, api, name) {
  return page.evaluate(
    async ({ api, name }) => {
      await window.app.loadApiJson(api, `${name}.json`);
      // A gallery workflow reproduces its documented result: seeds stay as written
      // (the editor's default, "randomize", would change them after every run).
      for (const node of window.app.graph.nodes) {
        for (const widget of node.widgets ?? []) {
          if (widget.name === 'control_after_generate') widget.value = 'fixed';
        }
      }
      const ui = window.app.graph.serialize();
      const { output } = await window.app.graphToPrompt();
      return { ui, prompt: output };
    },
    { api, name },
  );
}

/** The ids of the nodes that differ between two API graphs. */
function differingNodes(a, b) {
  const ids = [...new Set([...Object.keys(a), ...Object.keys(b)])];
  return ids.filter((id) => !isDeepStrictEqual(a[id], b[id]));
}

/** The node types of `api` the running server does not define. */
async function missingTypes(page, api) {
  const known = await page.evaluate(() => Object.keys(window.LiteGraph.registered_node_types));
  return [...new Set(Object.values(apiNodes(api)).map((n) => n.class_type))].filter((t) => !known.includes(t));
}

async function main() {
  const dataDir = freshDir('cretok-export-');
  // The combo inputs list the files that exist: give them the tiny checkpoint and a token.
  await cretok(['dev', 'tiny-checkpoint', '--data-dir', dataDir]);
  await cretok(['train', '--checkpoint', 'tiny-sd3.safetensors', '--steps', '1', '--pairs-per-step', '1', '--quiet', '--data-dir', dataDir]);
  await installExampleNodes(dataDir);
  const server = await startServer(dataDir);
  const browser = await launchBrowser(server.base);
  try {
    await openEditor(browser.page, server.base + '/');
    const schemas = await getJson(server.base, '/api/object_info');
    fs.mkdirSync(OUT_DIR, { recursive: true });
    for (const { name, api } of galleryWorkflows()) {
      const missing = await missingTypes(browser.page, api);
      if (missing.length) {
        console.log(`skipped ${name}: the server has no ${missing.join(', ')}`);
        continue;
      }
      const { ui, prompt } = await convertInPage(browser.page, api, name);
      const differing = differingNodes(withoutDefaults(apiNodes(prompt), apiNodes(api), schemas), apiNodes(api));
      if (differing.length) {
        // E.g. inputs a node takes beyond its schema: the editor's graph has no slot for them.
        console.log(`skipped ${name}: the editor's graph differs from the file in nodes ${differing.join(', ')}`);
        continue;
      }
      // The view position is the exporting window's, not the workflow's.
      delete ui.extra?.ds;
      const file = path.join(OUT_DIR, `${name}.json`);
      fs.writeFileSync(file, JSON.stringify(ui, null, 2) + '\n');
      console.log(`wrote ${path.relative(REPO, file)} (${ui.nodes.length} nodes)`);
    }
  } finally {
    await closeBrowser(browser);
    await stopServer(server);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
