"""Generate charts/finetune-job/README.md: usage, and the values table from the chart's own
values.schema.json (descriptions, types) and values.yaml (defaults).

    python -m launcher.k8s.chart_docs > charts/finetune-job/README.md

A test checks that the committed file is current (`make golden` rewrites it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

INTRO = """\
# finetune-job

One vlaunch fine-tuning run of a vision-language model on Kubernetes: the job spec as a
ConfigMap, a Ray cluster (an operator-free Indexed Job, or a KubeRay RayJob) that runs
`vlaunch run`, and a volume for checkpoints and the model cache. `vlaunch k8s JOB.yaml`
renders and creates exactly these objects; this page is about using the chart with Helm
directly. The whole story is in [docs/kubernetes.md](../../docs/kubernetes.md).

Generated from `values.schema.json` and `values.yaml` by `python -m launcher.k8s.chart_docs`
(do not edit by hand).

## Install

Two values are required: the job spec and the image. No image is published: build and push
one first ([docs/containers.md](../../docs/containers.md)):

```bash
docker build -f docker/Dockerfile -t registry.example.com/ml/vlaunch:0.1.0-cuda .
docker push registry.example.com/ml/vlaunch:0.1.0-cuda

helm install my-run charts/finetune-job -n ml \\
  --set-file job.spec=job.yaml \\
  --set image=registry.example.com/ml/vlaunch:0.1.0-cuda \\
  --set nodes=2 --set gpusPerNode=8
```

Everything else has a default: 1 pod with 1 GPU; per pod `cpuPerGpu` x GPUs cores and
`memoryPerGpuGib` x GPUs GiB of memory (8 GPUs: 80 cores, 800Gi; set `cpu` and `memory` to
choose yourself); a toleration of the `nvidia.com/gpu:NoSchedule` taint GPU nodes usually
carry; a 100Gi `ReadWriteMany` claim for checkpoints. Without a plan (`job.plan`), `vlaunch
run` plans in the pod for `nodes` x `gpusPerNode`, overriding the spec's `resources.nodes`
and `resources.gpus_per_node`.

With vlaunch at hand, let it compute every value from the spec, its plan included (the plan
the launch checked is then what the workers train with):

```bash
vlaunch k8s job.yaml --nodes 2 --gpus-per-node 8 --profile a100-80gb \\
  --image registry.example.com/ml/vlaunch:0.1.0-cuda --print-values > values.yaml
helm lint --strict charts/finetune-job -f values.yaml
helm install my-run charts/finetune-job -n ml -f values.yaml
```

`values.schema.json` rejects unknown keys and bad values with the key and the reason, e.g.
`at '/nodes': minimum: got -1, want 1`. The release name does not name the objects (`runName`
does, else the release name). `helm uninstall` keeps the claim (it holds the checkpoints).

## Values
"""


def _type(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    kinds = schema.get("type", "any")
    if isinstance(kinds, list):
        return " \\| ".join(str(k) for k in kinds)
    return str(kinds)


def _default(value: Any) -> str:
    if value is None:
        return "`null`"
    if value == "":
        return '`""`'
    text = json.dumps(value, separators=(", ", ": "))
    return f"`{text}`"


def rows(
    schema: dict[str, Any], defaults: dict[str, Any], prefix: str = ""
) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every value, nested objects expanded."""
    out = []
    required = set(schema.get("required", ()))
    for key, sub in schema.get("properties", {}).items():
        name = prefix + key
        default = defaults.get(key) if isinstance(defaults, dict) else None
        desc = " ".join(str(sub.get("description", "")).split())
        props = sub.get("properties", {})
        nested = (
            sub.get("type") == "object"
            and bool(props)
            and all("description" in p for p in props.values())
        )
        is_required = key in required and sub.get("minLength", 0) >= 1
        if nested:
            out.append((name, "object", "", desc))
            out += rows(sub, default or {}, name + ".")
        else:
            shown = "**required**" if is_required else _default(default)
            out.append((name, _type(sub), shown, desc))
    return out


def render(chart: Path | None = None) -> str:
    from launcher.k8s.chart import chart_dir

    folder = chart or chart_dir()
    schema = json.loads((folder / "values.schema.json").read_text(encoding="utf-8"))
    defaults = yaml.safe_load((folder / "values.yaml").read_text(encoding="utf-8"))
    lines = [INTRO, "| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key, typ, default, desc in rows(schema, defaults):
        escaped = desc.replace("|", "\\|")
        lines.append(f"| `{key}` | {typ} | {default} | {escaped} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
