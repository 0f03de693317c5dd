// CreTok Studio's default workflow for the ComfyUI editor. The editor opens
// its built-in default graph (`app.loadGraphData()` without a graph) when a
// browser has no workflow of its own to restore, and on "Load Default"; this
// extension opens the gallery workflow named by the CreTok.DefaultWorkflow
// setting there instead. A browser with its own workflows keeps them.
import { app } from '../../scripts/app.js';

const SETTING = 'CreTok.DefaultWorkflow';
const WORKFLOWS = __WORKFLOWS__;

async function defaultWorkflow() {
  const name = app.extensionManager.setting.get(SETTING) || WORKFLOWS[0];
  const response = await fetch(`templates/${encodeURIComponent(name)}.json`);
  if (!response.ok) throw new Error(`default workflow ${name}: HTTP ${response.status}`);
  return response.json();
}

app.registerExtension({
  name: 'cretok.DefaultWorkflow',
  settings: [
    {
      id: SETTING,
      category: ['CreTok', 'Workflow', 'Default workflow'],
      name: 'Workflow a new browser (and "Load Default") opens',
      type: 'combo',
      options: WORKFLOWS,
      defaultValue: WORKFLOWS[0],
    },
  ],
  async setup() {
    const load = app.loadGraphData.bind(app);
    app.loadGraphData = async (graph, ...rest) => {
      if (graph) return load(graph, ...rest);
      try {
        return await load(await defaultWorkflow(), ...rest);
      } catch (error) {
        console.error(error);
        return load(graph, ...rest);
      }
    };
  },
});
