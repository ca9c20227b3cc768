"""`vlaunch k8s JOB.yaml [--nodes N] [--gpus-per-node G] [--namespace NS] [--dry-run]`.

Plans the job, renders the `finetune-job` chart with values derived from the spec and the
plan, and creates the objects with the `kubernetes` client; prints the handle
`k8s:<namespace>/<name>` that `vlaunch status|logs|cancel` take. `--dry-run` prints the
rendered manifests instead, `--print-values` the chart values (for `helm install -f`).

Every `k8s:` option of the spec has a flag, generated from `vlaunch_core/k8s_options.py`
(`--shm-size 32Gi` is the override `k8s.shm_size=32Gi`), so the spec stays the one source.
"""

from __future__ import annotations

import argparse
import logging
import sys

from launcher.commands.common import add_job_argument, add_resource_flags, load_job
from launcher.commands.flags import add_section_flags

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vlaunch_core.k8s_options import KubernetesOptions

    add_job_argument(parser)
    add_resource_flags(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the rendered manifests; create nothing"
    )
    parser.add_argument(
        "--print-values",
        action="store_true",
        help="print the chart values (for `helm install -f`); create nothing",
    )
    parser.add_argument(
        "--context",
        metavar="NAME",
        default=None,
        help="kubeconfig context (default: the current one)",
    )
    add_section_flags(
        parser.add_argument_group("Kubernetes options (the spec's k8s: section)"),
        KubernetesOptions,
        "k8s",
    )


def run(args: argparse.Namespace) -> int:
    from launcher.k8s.chart import render
    from launcher.k8s.values import chart_values, paths_outside_volume, values_yaml
    from vlaunch_core.errors import UserError
    from vlaunch_core.plan import make_plan

    spec = load_job(args)
    if spec.resources.profile == "auto":
        raise UserError(
            "resources.profile is 'auto', which would describe this machine, not the cluster",
            hint="name the cluster nodes' hardware profile: --profile h100-80gb (see "
            "`vlaunch profiles`), or --profile cpu",
        )
    plan = make_plan(spec)
    opts = spec.k8s
    if opts.kuberay.enabled and "ttl_seconds_after_finished" in opts.model_fields_set:
        logger.warning(
            "k8s.ttl_seconds_after_finished is not used with KubeRay: the Ray "
            "cluster is deleted as soon as the job finishes"
        )
    outside = paths_outside_volume(spec)
    if outside:
        logger.warning(
            "these inputs are not on the pods' volume (%s), so they must exist in the "
            "image at the same path: %s",
            opts.volume.mount_path,
            ", ".join(outside),
        )
    values = chart_values(spec, plan.world)
    if args.print_values:
        sys.stdout.write(values_yaml(values))
        return 0
    rendered = render(values, opts.namespace)
    if args.dry_run:
        if not plan.fits:
            logger.warning("%s", "; ".join(plan.notes))
        sys.stdout.write(rendered.text)
        return 0
    if not plan.fits:
        raise UserError(
            f"the plan of '{spec.name}' does not fit on {plan.world.nodes} x "
            f"{plan.world.gpus_per_node} {plan.world.profile.name}: {'; '.join(plan.notes)}",
            hint="see `vlaunch plan` for the memory prediction; nothing was submitted",
        )
    from launcher.k8s.kubeapi import Kube, default_api_client
    from launcher.k8s.submit import submit

    job_id = submit(Kube(default_api_client(args.context)), rendered, opts.namespace)
    print(rendered.notes.strip(), file=sys.stderr)
    print(job_id)
    return 0
