"""The chart's values for a job: the spec's `k8s:` section in camelCase, plus what the spec and
its plan say about the run (name, nodes, GPUs, resources, where outputs go in the pods), and
the plan itself (`plan.json` in the ConfigMap, for `vlaunch run --plan`).

`vlaunch k8s --print-values` prints exactly this, so `helm install -f` renders the same
manifests as `vlaunch k8s`.
"""

from __future__ import annotations

import logging
import math
import posixpath
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from vlaunch_core.errors import UserError
from vlaunch_core.section import Section

if TYPE_CHECKING:
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)

#: Share of a node's cores and host memory a pod may request at most (the rest is left to the
#: kubelet, the container runtime and daemon sets).
NODE_SHARE = 0.9
#: Memory per worker process on the `cpu` profile.
CPU_WORKER_MEMORY_GIB = 4
#: Host memory a pod requests beyond the plan's prediction of it (as memory_headroom on GPUs).
HOST_MEMORY_MARGIN = 0.10
#: `k8s:` keys that are not chart values: the namespace is the release's.
NOT_VALUES = ("namespace",)


def camel(name: str) -> str:
    """`ttl_seconds_after_finished` -> `ttlSecondsAfterFinished`."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def section_values(section: Section, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A spec section as chart values: camelCase keys, nested sections as mappings."""
    out: dict[str, Any] = {}
    for name in type(section).model_fields:
        if name in skip:
            continue
        value = getattr(section, name)
        out[camel(name)] = section_values(value) if isinstance(value, Section) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def pod_output_dir(spec: JobSpec) -> str:
    """`output.dir` inside the pods: URIs as they are; a relative path goes under the volume's
    mount path; an absolute path must already be under it."""
    out = spec.output.dir
    mount = spec.k8s.volume.mount_path
    if "://" in out:
        return out
    path = PurePosixPath(posixpath.normpath(posixpath.join(mount, out)))
    if path != PurePosixPath(mount) and PurePosixPath(mount) not in path.parents:
        raise UserError(
            f"output.dir '{out}' is not on the pods' volume (mounted at {mount})",
            hint=f"use a relative output.dir (it goes under {mount}), a path under {mount}, "
            "or an object-store URI (s3://..., gs://...)",
        )
    return str(path)


def pod_requests(spec: JobSpec, plan: Plan) -> tuple[str, str]:
    """CPU and memory requests per pod (memory is also the limit): the spec's `k8s.cpu` and
    `k8s.memory`, else sized for the pod's GPUs, `k8s.cpu_per_gpu` cores and
    `k8s.memory_per_gpu_gib` GiB each (the chart's own rule for `helm install`), never more
    than 90% of the profile's node, and memory at least the plan's host-memory prediction
    plus 10%. On the `cpu` profile: a core and 4 GiB per worker process."""
    opts, world = spec.k8s, plan.world
    prof = world.profile
    if not prof.is_gpu:
        workers = world.gpus_per_node
        return opts.cpu or str(workers), opts.memory or f"{CPU_WORKER_MEMORY_GIB * workers}Gi"
    gpus = world.gpus_per_node
    cpu_cap = max(1, math.floor(prof.cpus_per_node * NODE_SHARE))
    memory_cap = max(1, math.floor(prof.host_memory_gib * NODE_SHARE))
    cpu = min(opts.cpu_per_gpu * gpus, cpu_cap)
    memory = min(opts.memory_per_gpu_gib * gpus, memory_cap)
    host = plan.host_memory
    if host is not None and opts.memory is None:
        needed = math.ceil(host.total * (1 + HOST_MEMORY_MARGIN) / 1024**3)
        if needed > memory:
            logger.info(
                "memory request per pod raised from %d Gi to %d Gi: the plan predicts %.0f GiB "
                "of host memory per node (plus 10%%)",
                memory,
                min(needed, memory_cap),
                host.total / 1024**3,
            )
            memory = min(needed, memory_cap)
    return opts.cpu or str(cpu), opts.memory or f"{memory}Gi"


def chart_values(spec: JobSpec, plan: Plan) -> dict[str, Any]:
    """The finetune-job chart's values for `spec` with its `plan` (on the plan's world)."""
    opts = spec.k8s
    world = plan.world
    cpu, memory = pod_requests(spec, plan)
    values: dict[str, Any] = {
        "job": {"spec": spec.to_yaml(), "plan": plan.to_json_text()},
        "runName": spec.name,
        "nodes": world.nodes,
        "gpusPerNode": world.gpus_per_node if world.profile.is_gpu else 0,
        "outputDir": pod_output_dir(spec),
    }
    values.update(section_values(opts, skip=NOT_VALUES))
    values["cpu"], values["memory"] = cpu, memory
    return values


def values_yaml(values: dict[str, Any]) -> str:
    """Values as a YAML document for `helm install -f`; the job spec as a readable block."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
        style = "|" if "\n" in data else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(values, Dumper=Dumper, sort_keys=False, allow_unicode=True)


def paths_outside_volume(spec: JobSpec) -> list[str]:
    """Input paths of the spec that are not under the volume's mount path: they must exist in
    the image (or another mount) at the same place, or the pods cannot read them."""
    mount = PurePosixPath(spec.k8s.volume.mount_path)
    paths = list(spec.data.registry) + list(spec.resources.profiles)
    for entry in spec.data.datasets.values():
        paths.append(entry.data_path)
        if entry.media_dir is not None:
            paths.append(entry.media_dir)
    if spec.model.name_or_path.startswith("/"):
        paths.append(spec.model.name_or_path)
    return [p for p in paths if "://" not in p and mount not in PurePosixPath(p).parents]
