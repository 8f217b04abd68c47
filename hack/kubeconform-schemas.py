#!/usr/bin/python3
"""Writes kubeconform's JSON schemas, one file per kind, from local sources only.

  hack/kubeconform-schemas.py OUT_DIR SWAGGER_JSON CRD_YAML...

SWAGGER_JSON is the OpenAPI v2 document of the pinned Kubernetes release
(k8s.io/kubernetes/api/openapi-spec/swagger.json from the Go module cache); each CRD contributes
its openAPIV3Schema per served version. Files are named like kubeconform's default registry,
`<kind><-group-prefix>-<version>.json` (deployment-apps-v1.json, service-v1.json,
tracedpipeline-tracing-v1alpha1.json), so the schema location is
`OUT_DIR/{{ .ResourceKind }}{{ .KindSuffix }}.json`.

Schemas are "standalone strict": every $ref is inlined as a local definition and every object
that lists its properties refuses others, so a misspelt field fails validation instead of being
silently dropped by the apiserver.
"""

import json
import os
import sys

import yaml


def strict(node):
    """Recursively forbid unknown properties where a schema lists its properties."""
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


def refs(node, found):
    """Names of the definitions `node` refers to (directly)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            found.add(ref[len("#/definitions/"):])
        for value in node.values():
            refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)
    return found


def closure(definitions, root):
    """Every definition reachable from `root`."""
    todo, seen = list(refs(definitions[root], set())), {root}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(refs(definitions[name], set()))
    return seen


def file_name(kind, group, version):
    prefix = group.split(".")[0] if group else ""
    suffix = f"-{prefix}-{version}" if prefix else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def write(out_dir, name, schema):
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
        json.dump(schema, f, indent=1, sort_keys=True)
        f.write("\n")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out_dir, swagger_path, crd_paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    os.makedirs(out_dir, exist_ok=True)
    with open(swagger_path, encoding="utf-8") as f:
        definitions = json.load(f)["definitions"]
    written = 0
    for name, definition in definitions.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            schema = dict(definition)
            schema["definitions"] = {
                d: definitions[d] for d in sorted(closure(definitions, name)) if d != name
            }
            write(out_dir, file_name(gvk["kind"], gvk["group"], gvk["version"]), strict(schema))
            written += 1
    for path in crd_paths:
        with open(path, encoding="utf-8") as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") != "CustomResourceDefinition":
                    continue
                spec = doc["spec"]
                for version in spec["versions"]:
                    schema = version["schema"]["openAPIV3Schema"]
                    # The apiserver adds the envelope every object has; CRDs do not spell it out.
                    schema.setdefault("properties", {}).update(
                        {
                            "apiVersion": {"type": "string"},
                            "kind": {"type": "string"},
                            "metadata": {"type": "object"},
                        }
                    )
                    schema = strict(schema)
                    kind = spec["names"]["kind"]
                    write(out_dir, file_name(kind, spec["group"], version["name"]), schema)
                    written += 1
    print(f"kubeconform-schemas: {written} schemas in {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    main()
