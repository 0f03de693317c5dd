"""Queues an API workflow through comfy-api-simplified, as its README shows,
and writes the one image it gets back to OUT.

usage: comfy_api_simplified_txt2img.py SERVER_URL WORKFLOW.json OUT.png
"""

import sys

from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper


def main():
    url, workflow, out = sys.argv[1:4]
    api = ComfyApiWrapper(url)
    wf = ComfyWorkflowWrapper(workflow)
    wf.set_node_param("KSampler", "seed", 7)
    images = api.queue_and_wait_images(wf, "Save Image")
    if len(images) != 1:
        sys.exit(f"expected one image, got {sorted(images)}")
    [(name, data)] = images.items()
    with open(out, "wb") as f:
        f.write(data)
    print(name)


if __name__ == "__main__":
    main()
