"""Render a job spec into the sbatch script `vlaunch slurm` submits (the dry-run half).

`build_request(spec, plan)` returns a `SlurmRequest`: the script text, the resolved spec and
the launch's plan written next to it (`vlaunch run SPEC --plan PLAN`: the workers train with
the plan the launch checked), where they go, and the sbatch command line. Nothing touches
the cluster or the disk here; `launcher.slurm.submit` does that. The script comes from the
Jinja2 templates in `slurm/templates/` (StrictUndefined); every user string reaches it through
the template's `quote` filter (shell) or, in the `#SBATCH` lines built here, `sbatch_quote`,
so no name, path or value can run a command. `slurm.setup` lines are the exception by design:
they are shell code.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from launcher.slurm.resources import NodeLimits, node_request
from vlaunch_core.errors import Problem, raise_if_any
from vlaunch_core.slurm_options import time_limit_seconds

if TYPE_CHECKING:
    import jinja2

    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

EXIT_INTERRUPTED = 75
"""The driver's exit status for "stopped after a resumable checkpoint" (EX_TEMPFAIL)."""

JOB_TEMPLATE = "job.sbatch.j2"
ENTRYPOINT_TEMPLATE = "entrypoint.sh.j2"

_SAFE_SBATCH = re.compile(r"^[A-Za-z0-9_.,:/=@%+-]+$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_JOB_NAME_MAX = 64


def sbatch_quote(value: object) -> str:
    """Quote a value for an `#SBATCH` line.

    sbatch parses these lines itself, not the shell: inside quotes it still treats a backslash
    as an escape, so `shlex.quote` is wrong there. Double quotes with `\\` and `"` escaped
    read back exactly (checked against the real sbatch in tests/slurm).
    """
    text = str(value)
    if _SAFE_SBATCH.match(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def shell_quote(value: object) -> str:
    return shlex.quote(str(value))


def slurm_job_name(run_name: str) -> str:
    """The run name as a Slurm job name: `[A-Za-z0-9._-]`, at most 64 characters.

    A name that had to change gets a short hash, so two runs never share a job name.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip("-.") or "run"
    if safe == run_name and len(safe) <= _JOB_NAME_MAX:
        return safe
    digest = hashlib.sha256(run_name.encode()).hexdigest()[:8]
    return f"{safe[: _JOB_NAME_MAX - 9]}-{digest}"


@lru_cache(maxsize=1)
def template_env() -> jinja2.Environment:
    import jinja2

    from launcher.assets import asset_dir

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(asset_dir("slurm") / "templates")),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["quote"] = shell_quote
    return env


def restart_header(signal_seconds: int, mode: str) -> list[str]:
    """The `#SBATCH` lines the restart logic depends on (job script and entry points)."""
    return [
        "--ntasks-per-node=1",
        "--open-mode=append",  # a requeued job appends to the same log
        f"--signal=B:USR1@{signal_seconds}",  # B: the batch shell only; it tells the driver
        "--requeue" if mode == "requeue" else "--no-requeue",
    ]


@dataclass(frozen=True)
class SlurmRequest:
    """Everything `vlaunch slurm` would do: files to write, then `sbatch --parsable SCRIPT`."""

    job_name: str
    script: str
    script_path: Path
    spec_yaml: str
    spec_path: Path
    plan_json: str
    plan_path: Path
    log_dir: Path
    partition: str | None = None
    notes: tuple[str, ...] = ()
    """How defaults were fitted to the nodes (`--cpus-per-task`, `--mem`), one line each."""

    @property
    def files(self) -> dict[Path, str]:
        """What submitting writes, in order: the resolved spec, the plan, then the script."""
        return {
            self.spec_path: self.spec_yaml,
            self.plan_path: self.plan_json,
            self.script_path: self.script,
        }

    @property
    def sbatch_argv(self) -> list[str]:
        return ["sbatch", "--parsable", str(self.script_path)]

    def log_file(self, job_id: str = "%j") -> Path:
        """The job's output (`#SBATCH --output=<log_dir>/%x-%j.out`)."""
        return self.log_dir / f"{self.job_name}-{job_id}.out"

    def materialize(self) -> str:
        """The sbatch script, exactly as it would be submitted."""
        return self.script

    def describe(self) -> str:
        """What submitting would do, one line per action (and how defaults were fitted)."""
        lines = [f"write {path}" for path in self.files]
        lines.append("run   " + shlex.join(self.sbatch_argv))
        lines += [f"note  {note}" for note in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.materialize()


def _absolute(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().absolute())


def check_spec(spec: JobSpec, *, in_allocation: bool = False) -> None:
    """What keeps `spec` from becoming a safe sbatch script, all problems at once."""
    raise_if_any("cannot render the Slurm job", _problems(spec, in_allocation))


def _problems(spec: JobSpec, in_allocation: bool) -> list[Problem]:
    s = spec.slurm
    out: list[Problem] = []
    if spec.resources.profile == "auto" and not in_allocation:
        out.append(
            Problem(
                "resources.profile",
                "'auto' detects this machine's GPUs, not the cluster's",
                "name the nodes' hardware profile (`vlaunch profiles`), e.g. --profile h100-80gb",
            )
        )
    if "://" in spec.output.dir and s.log_dir is None:
        out.append(
            Problem(
                "slurm.log_dir",
                f"output.dir is a URI ({spec.output.dir}); Slurm logs need a path",
                "set slurm.log_dir to a folder on a file system the nodes share",
            )
        )
    header = {
        "partition": s.partition,
        "account": s.account,
        "qos": s.qos,
        "time": s.time,
        "constraint": s.constraint,
        "mem": s.mem,
        "container_image": s.container_image,
        "log_dir": s.log_dir,
    }
    header.update({f"container_mounts[{i}]": m for i, m in enumerate(s.container_mounts)})
    if "://" not in spec.output.dir:
        header["output.dir"] = spec.output.dir
    for key, value in header.items():
        if value is not None and _CONTROL.search(value):
            where = key if key.startswith("output.") else f"slurm.{key}"
            out.append(
                Problem(
                    where,
                    "contains a control character (newline, tab, ...)",
                    "remove it: this value goes into an #SBATCH line",
                )
            )
    if _CONTROL.search(spec.name):
        out.append(Problem("name", "contains a control character", "remove it"))
    for key, value in spec.env.items():
        if not _ENV_KEY.match(key):
            out.append(
                Problem(
                    f"env.{key}",
                    "not a valid environment variable name",
                    "use letters, digits and '_' (not starting with a digit)",
                )
            )
        if "\x00" in value:
            out.append(Problem(f"env.{key}", "contains a NUL character", "remove it"))
    if s.time is not None and s.signal_seconds >= time_limit_seconds(s.time):
        out.append(
            Problem(
                "slurm.signal_seconds",
                f"the checkpoint signal ({s.signal_seconds} s before the end) would come before "
                f"the job starts: the time limit is {s.time}",
                "lower slurm.signal_seconds or raise slurm.time",
            )
        )
    return out


def submitted_yaml(spec: JobSpec) -> str:
    """The spec as the job reads it: what the user set, with paths resolved and flags,
    overrides and the variant applied. Defaults stay out (unlike `JobSpec.to_yaml()`), so
    that the rules about explicitly set keys pass again when `vlaunch run` loads it."""
    import yaml

    data = spec.document(exclude_unset=True)
    head = "# Written by `vlaunch slurm`: the job spec as submitted. Do not edit.\n"
    return head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _tuning_summary(spec: JobSpec) -> str:
    """One line for the script's header comment (only registry names, no user text)."""
    t = spec.tuning
    text = f"preset {t.preset}" if t.preset else "explicit module modes"
    modes = t.modes()
    text += " (" + ", ".join(f"{m} {modes[m]}" for m in sorted(modes)) + ")"
    if spec.slurm.variant:
        text += f", VILA's {spec.slurm.variant}"
    if spec.data.group_by_length:
        text += ", length-grouped batches"
    return text


def container_name(image: str) -> str:
    """The pyxis container name of an image: every step of a job names it, so the image is
    imported once per node (pyxis reuses a named container); a hash of the image, so that a
    site whose named containers outlive the job never hands one image's container to
    another."""
    return "vlaunch-" + hashlib.sha256(image.encode()).hexdigest()[:12]


def build_request(
    spec: JobSpec, plan: Plan, *, in_allocation: bool = False, node: NodeLimits | None = None
) -> SlurmRequest:
    """The request that runs `spec` (validated, variant applied) with `plan` (its plan);
    `node`: the partition's smallest node, when the cluster was asked."""
    check_spec(spec, in_allocation=in_allocation)
    s = spec.slurm
    spec = spec.model_copy(deep=True)
    spec.output.dir = _absolute(spec.output.dir)  # the job must not depend on its cwd
    world = plan.world
    profile = world.profile
    gpus = world.gpus_per_node if profile.is_gpu else 0
    procs_per_node = world.gpus_per_node
    asked = node_request(spec, plan, node)
    cpus = asked.cpus
    threads = max(1, cpus // procs_per_node)

    job_name = slurm_job_name(spec.name)
    log_dir = Path(_absolute(s.log_dir)) if s.log_dir else Path(spec.run_dir) / "slurm"
    spec_yaml = submitted_yaml(spec)
    # Named after the run: a new submission of the same run replaces them (and resumes it).
    spec_path, script_path = log_dir / f"{job_name}.job.yaml", log_dir / f"{job_name}.sbatch"
    plan_path = log_dir / f"{job_name}.plan.json"

    header = [
        f"--job-name={sbatch_quote(job_name)}",
        f"--nodes={world.nodes}",
        f"--cpus-per-task={cpus}",
    ]
    if gpus:
        header.append(f"--gpus-per-node={gpus}")
    for flag, value in (
        ("partition", s.partition),
        ("account", s.account),
        ("qos", s.qos),
        ("time", s.time),
        ("constraint", s.constraint),
        ("mem", asked.mem),
    ):
        if value is not None:
            header.append(f"--{flag}={sbatch_quote(value)}")
    if asked.exclusive:
        header.append("--exclusive")
    # `%` in a path is a Slurm filename pattern unless doubled.
    output = str(log_dir).replace("%", "%%") + "/%x-%j.out"
    header.append(f"--output={sbatch_quote(output)}")
    header += restart_header(s.signal_seconds, s.requeue)

    container: list[str] = []
    if s.container_image:
        container.append(f"--container-image={s.container_image}")
        container.append(f"--container-name={container_name(s.container_image)}")
        if s.container_mounts:
            container.append(f"--container-mounts={','.join(s.container_mounts)}")

    script = (
        template_env()
        .get_template(JOB_TEMPLATE)
        .render(
            header=header,
            name=spec.name,
            tuning=_tuning_summary(spec),
            spec_path=str(spec_path),
            plan_path=str(plan_path),
            script_path=str(script_path),
            max_restarts=s.max_restarts,
            restart_mode=s.requeue,
            signal_seconds=s.signal_seconds,
            ray_port=s.ray_port,
            ray_timeout=s.ray_timeout,
            gpus=gpus,
            threads=threads,
            env=sorted(spec.env.items()),
            setup=s.setup,
            container=container,
            exit_interrupted=EXIT_INTERRUPTED,
        )
    )
    return SlurmRequest(
        notes=asked.notes,
        job_name=job_name,
        script=script,
        script_path=script_path,
        spec_yaml=spec_yaml,
        spec_path=spec_path,
        plan_json=plan.to_json_text(),
        plan_path=plan_path,
        log_dir=log_dir,
        partition=s.partition,
    )


def render_entrypoint(variant: str) -> str:
    """The ready `slurm/<variant>.sh` for plain `sbatch` users."""
    from vlaunch_core.models.presets import VARIANTS
    from vlaunch_core.slurm_options import SlurmOptions

    preset = VARIANTS[variant]
    defaults = SlurmOptions()
    header = [f"--job-name={variant}", "--output=%x-%j.out"]
    header += restart_header(defaults.signal_seconds, defaults.requeue)
    return (
        template_env()
        .get_template(ENTRYPOINT_TEMPLATE)
        .render(
            header=header,
            variant=variant,
            preset=preset.name,
            grouped=preset.grouped,
            description=preset.description,
        )
    )


def entrypoint_files(slurm_dir: str | os.PathLike[str]) -> dict[Path, str]:
    """Every entry point `slurm/` should hold, by path."""
    from vlaunch_core.models.presets import VARIANTS

    return {Path(slurm_dir) / f"{v}.sh": render_entrypoint(v) for v in VARIANTS}
