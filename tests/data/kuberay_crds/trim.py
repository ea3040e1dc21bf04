"""Vendor a trimmed copy of KubeRay's CRD schemas: only the paths cluster/kuberay-*.yaml use.

    python tests/data/kuberay_crds/trim.py --kuberay /path/to/kuberay [--rev HEAD]

``--kuberay`` is a kuberay checkout or a bare git directory of it (``git clone --bare
https://github.com/ray-project/kuberay``); the CRDs are read at ``--rev`` from
``ray-operator/config/crd/bases/ray.io_{rayjobs,rayclusters}.yaml`` (``spec.versions[name].schema.openAPIV3Schema``
of the manifests' ``apiVersion``). Rerun it after changing KubeRay versions, or when a manifest starts using a field
the trimmed copy lacks (tests/unit/test_cluster_schemas.py then names it), and update README.md here.

Trimming walks each CRD schema together with every manifest of its kind. Along a path a manifest uses, a schema node
keeps its validation keywords (``type``, ``required``, ``enum``, ``properties``, ``items``, ``additionalProperties``,
``x-kubernetes-int-or-string``, ``x-kubernetes-preserve-unknown-fields``, ...); descriptions and CEL rules go. A
property no manifest uses, beside one that is used, stays as a stub of its type keywords only, so a real field
(e.g. the commented-out ``nodeSelector``) still validates while a misspelled one does not.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
CRD_DIR = "ray-operator/config/crd/bases"
CRDS = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
# The keywords kept along a used path; everything else (description, default, x-kubernetes-validations, list-type
# markers) is dropped.
KEEP = (
    "type",
    "required",
    "enum",
    "format",
    "pattern",
    "anyOf",
    "allOf",
    "oneOf",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
)
STUB = (
    "type",
    "enum",
    "format",
    "pattern",
    "anyOf",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
)


def out_name(kind: str, version: str) -> str:
    return os.path.join(HERE, f"{CRDS[kind].replace('.yaml', '')}.{version}.json")


def stub(schema: dict) -> dict:
    return {k: schema[k] for k in STUB if k in schema}


def trim(schema: dict, docs: list, where: str = "") -> dict:
    """``schema`` restricted to what ``docs`` (the manifest values at this path) use."""
    out = {k: schema[k] for k in KEEP if k in schema}
    dicts = [d for d in docs if isinstance(d, dict)]
    if "properties" in schema:
        used = {k for d in dicts for k in d}
        unknown = sorted(used - set(schema["properties"]))
        if unknown and not schema.get("x-kubernetes-preserve-unknown-fields"):
            sys.exit(f"{where or '.'}: {unknown} not in the CRD (a typo in the manifest, or another KubeRay version)")
        out["properties"] = {
            name: trim(sub, [d[name] for d in dicts if name in d], f"{where}.{name}") if name in used else stub(sub)
            for name, sub in schema["properties"].items()
        }
    if "items" in schema:
        out["items"] = trim(schema["items"], [x for d in docs if isinstance(d, list) for x in d], f"{where}[]")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = trim(extra, [v for d in dicts for v in d.values()], f"{where}.*")
    elif extra is not None:
        out["additionalProperties"] = extra
    return out


def dumps(v, ind: int = 0, width: int = 118) -> str:
    """JSON that packs short members onto shared lines: the files stay a few hundred lines and diff well."""
    flat = json.dumps(v, sort_keys=True)
    if ind + len(flat) <= width or not isinstance(v, (dict, list)) or not v:
        return flat
    pad = " " * (ind + 1)
    items = [(json.dumps(k) + ": ", v[k]) for k in sorted(v)] if isinstance(v, dict) else [("", x) for x in v]
    lines, line = [], ""
    for i, (head, x) in enumerate(items):
        sep = "," if i < len(items) - 1 else ""
        short = head + json.dumps(x, sort_keys=True) + sep
        if len(pad) + len(short) > width:  # too long for one line: its own block
            lines += [pad + line] if line else []
            lines.append(pad + head + dumps(x, ind + 1, width) + sep)
            line = ""
        elif line and len(pad) + len(line) + 1 + len(short) <= width:
            line += " " + short
        else:
            lines += [pad + line] if line else []
            line = short
    lines += [pad + line] if line else []
    ends = "{}" if isinstance(v, dict) else "[]"
    return ends[0] + "\n" + "\n".join(lines) + "\n" + " " * ind + ends[1]


def read_crd(kuberay: str, rev: str, name: str) -> tuple[dict, str]:
    """(the parsed CRD, the commit it came from)."""
    git = ["git", "-C", kuberay] if os.path.isdir(os.path.join(kuberay, CRD_DIR)) else ["git", f"--git-dir={kuberay}"]
    commit = subprocess.run(
        git + ["rev-parse", f"{rev}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    text = subprocess.run(
        git + ["show", f"{commit}:{CRD_DIR}/{name}"], capture_output=True, text=True, check=True
    ).stdout
    return yaml.safe_load(text), commit


def manifests() -> dict:
    """kind -> the KubeRay documents under cluster/ of that kind."""
    by_kind: dict = {}
    for path in sorted(glob.glob(os.path.join(REPO, "cluster", "kuberay-*.yaml"))):
        with open(path, encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                if isinstance(doc, dict) and doc.get("kind") in CRDS:
                    by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kuberay", required=True, help="a kuberay checkout or bare git directory")
    ap.add_argument("--rev", default="HEAD")
    args = ap.parse_args(argv)
    for kind, docs in sorted(manifests().items()):
        versions = {d["apiVersion"].split("/")[1] for d in docs}
        crd, commit = read_crd(args.kuberay, args.rev, CRDS[kind])
        for version in sorted(versions):
            [entry] = [v for v in crd["spec"]["versions"] if v["name"] == version]
            mine = [d for d in docs if d["apiVersion"].split("/")[1] == version]
            schema = trim(entry["schema"]["openAPIV3Schema"], mine)
            record = {
                "source": {
                    "repository": "https://github.com/ray-project/kuberay",
                    "commit": commit,
                    "path": f"{CRD_DIR}/{CRDS[kind]}",
                    "version": version,
                    "trimmed_by": "tests/data/kuberay_crds/trim.py",
                },
                "kind": kind,
                "openAPIV3Schema": schema,
            }
            with open(out_name(kind, version), "w", encoding="utf-8") as fh:
                fh.write(dumps(record) + "\n")
            print(f"{kind} {version}: {os.path.relpath(out_name(kind, version), REPO)} from kuberay {commit}")


if __name__ == "__main__":
    main()
