"""The cluster manifests under ``cluster/``, read for the tests: every YAML file parsed with ``yaml.safe_load`` only,
every string in a document (an embedded YAML string walked too), the documents by file name and by ``kind``."""

import glob
import os

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(REPO, "cluster")


def load(path):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def files():
    return sorted(glob.glob(os.path.join(CLUSTER, "*.yaml")) + glob.glob(os.path.join(CLUSTER, "*.yml")))


def strings(node):
    """Every string in a parsed YAML document; an embedded YAML string (RayJob.runtimeEnvYAML) is walked too."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)
    elif isinstance(node, str):
        yield node
        if "\n" in node and ":" in node:
            try:
                inner = yaml.safe_load(node)
            except yaml.YAMLError:
                inner = None
            if isinstance(inner, (dict, list)):
                yield from strings(inner)


def docs():
    return {os.path.basename(p): load(p) for p in files()}


def kind(kind):
    return {name: d for name, d in docs().items() if isinstance(d, dict) and d.get("kind") == kind}
