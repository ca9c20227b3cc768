"""Ray Train (2.60, "Train V2") hosts the loop: one `TorchTrainer` worker per device.

- `ScalingConfig` from the plan: workers = world size, GPUs or CPUs per worker.
- `RunConfig(name=spec.name, storage_path=output.dir)`: the run directory *is* Ray's
  experiment folder, so running the same spec again resumes it (Train V2 has no
  `resume_from_checkpoint`: a new `fit()` with the same name finds the checkpoint snapshot,
  and the workers get the latest checkpoint from `ray.train.get_checkpoint()`).
- `FailureConfig(max_failures=train.max_failures)`: a dead worker restarts the whole group
  from the last checkpoint. `CheckpointConfig(num_to_keep=train.keep_last)`.
- Checkpoints reach storage through `ray.train.report(metrics, checkpoint=...)`: each rank
  hands over its part and Ray merges them into `<name>/checkpoint_NNNNNN/`; the ranks wait
  until the controller has committed it (a SIGKILL right after a save must not lose it).

The driver (`run_driver`) turns SIGINT / SIGTERM / SIGUSR1 into the run's STOP file: the
workers checkpoint at the next step boundary and return, and the driver exits 75.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from trainer import dist
from trainer.commit import build_manifest, fsync_tree, write_manifest
from trainer.host import WriteFn, disk_errors, prune, publish, resume_point, stage
from trainer.rundir import RunDir, checkpoint_name, is_uri
from trainer.stop import EXIT_STOPPED, STOP_SIGNALS
from vlaunch_core.errors import UserError

if TYPE_CHECKING:
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)

#: Environment variables handed to every worker when set in the driver's environment.
PASSED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "HF_HUB_CACHE",
    "VLAUNCH_CACHE",
    "TOKENIZERS_PARALLELISM",
    "VLAUNCH_FAULT",
    "DS_ACCELERATOR",
    "NCCL_DEBUG",
    "NCCL_SOCKET_IFNAME",
    "GLOO_SOCKET_IFNAME",
    "CUDA_DEVICE_MAX_CONNECTIONS",
    "PYTORCH_CUDA_ALLOC_CONF",
    "VLAUNCH_VERBOSE",
)


class RayHost:
    """The loop's host inside a Ray Train worker.

    The ranks write the checkpoint straight into the run directory (Ray's experiment folder,
    on a filesystem every node mounts) with the protocol of `trainer.host`; rank 0 renames
    it into place and reports it to Ray without an upload (`CheckpointUploadMode.NO_UPLOAD`),
    waits until the controller has registered it, and only then writes its manifest: a
    checkpoint Ray never registered (the driver died) stays incomplete, and readers skip it.
    Nothing is staged outside the run directory, so a killed worker leaves no full-size
    temporary copy behind. Pruning to `train.keep_last` is ours (after the manifest), not
    Ray's, so an older complete checkpoint is never deleted before a newer one is committed.
    """

    name = "ray"

    def __init__(self, run_dir: RunDir, keep_last: int) -> None:
        self.run_dir = run_dir
        self.keep_last = keep_last

    @property
    def rank(self) -> int:
        import ray.train

        return int(ray.train.get_context().get_world_rank())

    @contextlib.contextmanager
    def resume_from(self) -> Iterator[Path | None]:
        yield resume_point(self.run_dir, self.rank)

    def save(self, step: int, write: WriteFn, metrics: dict[str, Any]) -> None:
        import ray.train

        rank = self.rank
        tmp = stage(self.run_dir, step, rank, write)
        manifest: dict[str, Any] = {}
        final = self.run_dir.checkpoint_dir(step)
        error: UserError | None = None
        if rank == 0:
            try:
                with disk_errors(self.run_dir, tmp):
                    manifest = build_manifest(tmp, step)
                    fsync_tree(tmp)
                    publish(self.run_dir, tmp, step)
            except UserError as e:
                error = e
        dist.agree(error)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(str(final)) if rank == 0 else None,
            checkpoint_dir_name=checkpoint_name(step),
            checkpoint_upload_mode=ray.train.CheckpointUploadMode.NO_UPLOAD,
        )
        # The controller registers a report when it next polls the workers: wait for it,
        # then commit (a worker dying right after `report` must not lose the checkpoint).
        ray.train.get_all_reported_checkpoints(
            consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED
        )
        if rank == 0:
            try:
                with disk_errors(self.run_dir, final):
                    write_manifest(final, manifest)
                    prune(self.run_dir, self.keep_last)
            except UserError as e:
                error = e
        dist.agree(error)


def worker_main(config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs: `trainer.loop.train`, except that a user
    error (bad data, model or batch, a full disk) ends the run instead of being retried by
    `FailureConfig`: the rank that meets it records it in the run directory
    (`RunDir.record_user_error`) and the driver reports it as the user's mistake. During
    setup every rank meets the same error and returns; during training the rank raises (the
    others may be waiting in a collective: Ray tears the group down) and the restarted
    group finds the record and returns at once."""
    from vlaunch_core.quiet import quiet_dependencies

    quiet_dependencies(progress_bars=False)  # before the training stack is imported

    import ray.train

    from trainer.loop import Recipe
    from trainer.models.quantization import bitsandbytes_only_for_qlora
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec_load import spec_from_dict

    spec = spec_from_dict(config["spec"], check=False)
    # before transformers and peft are imported
    bitsandbytes_only_for_qlora(spec.tuning.modes()["language_model"] == "qlora")
    _worker_logging(ray.train.get_context().get_world_rank())
    plan = Plan.from_json(config["plan"])
    run_dir = RunDir.for_spec(spec.output.dir, spec.name)
    if run_dir.read_user_error() is not None:
        return  # an earlier attempt of this run met a user error: do not retry it
    recipe = Recipe(
        spec,
        RayHost(run_dir, spec.train.keep_last),
        quiet=config["quiet"],
        plan=plan,
        owner=config.get("driver"),
    )
    try:
        try:
            recipe.setup()
        except UserError as e:
            recipe.failed(e)
            run_dir.record_user_error(e, claimed=recipe.claimed)
            return
        try:
            recipe.train()
        except UserError as e:
            recipe.failed(e)
            if not isinstance(e, dist.PeerFailed):
                run_dir.record_user_error(e, claimed=recipe.claimed)
            if getattr(e, "agreed", False):
                return  # every rank stopped at the same point: nothing to tear down
            raise
        except BaseException as e:
            recipe.failed(e)
            raise
    finally:
        recipe.cleanup()


def _worker_logging(rank: int) -> None:
    """Workers are processes of their own: send vlaunch's lines to stderr (Ray forwards them
    to the driver; INFO from rank 0, warnings from all); no weight-loading bars."""
    import warnings

    from transformers.utils import logging as hf_logging

    from vlaunch_core.quiet import verbose

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # peft -> hf
    if not verbose():
        hf_logging.disable_progress_bar()
    # Ray Train sets the worker's root logger to INFO, so every library's INFO lines reach
    # the driver (its own "Reporting training result ..." on every report, under a logger
    # named by its file path). Libraries say what matters at WARNING; vlaunch's own loggers
    # below have their own handler and level.
    logging.getLogger().setLevel(logging.INFO if verbose() else logging.WARNING)
    for name in ("trainer", "launcher"):
        log = logging.getLogger(name)
        if not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
            log.setLevel(logging.INFO if rank == 0 else logging.WARNING)
            log.propagate = False


def worker_env(spec: JobSpec) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.update(spec.env)
    return env


def make_trainer(
    spec: JobSpec,
    plan: Plan,
    *,
    quiet: bool,
    driver: dict[str, Any] | None = None,
    own_cluster: bool = False,
) -> Any:
    """The trainer of a job (not started): Ray Train's `DataParallelTrainer` without the
    helper actors a run does not use (trainer/ray_trainer.py; `own_cluster`: the launch
    started the cluster and stops it after the run), with `TorchTrainer`'s torch process
    group (trainer/ray_backend.py)."""
    # Train V2's classes (mypy resolves `ray.train` to the V1 ones statically).
    from ray.train.v2.api.config import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )

    from trainer.ray_backend import TorchProcessGroup
    from trainer.ray_trainer import VlaunchTrainer

    tr = spec.train
    world = plan.world
    on_gpu = world.profile.is_gpu
    resources: dict[str, float] = {"CPU": float(cpus_per_worker(plan))}
    if on_gpu:
        resources["GPU"] = 1.0
    return VlaunchTrainer(
        worker_main,
        own_cluster=own_cluster,
        train_loop_config={
            "spec": spec.model_dump(mode="json", by_alias=True),
            "plan": plan.to_json(),  # what the launch printed is what the workers train with
            "quiet": quiet,
            "driver": driver,
        },
        # TorchTrainer's process group, without torch in Ray Train's controller
        backend_config=TorchProcessGroup(
            backend="nccl" if on_gpu else "gloo", timeout_s=int(tr.timeout_minutes * 60)
        ),
        scaling_config=ScalingConfig(
            num_workers=world.world_size, use_gpu=on_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=spec.name,
            storage_path=spec.output.dir,
            failure_config=FailureConfig(max_failures=tr.max_failures),
            # keep_last is applied by RayHost after each commit, not by Ray
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            worker_runtime_env={"env_vars": worker_env(spec)},
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def start_autoscaling_coordinator() -> None:
    """Start, without waiting, the actor Ray Train's controller registers the run's resources
    with (Ray Data's detached `AutoscalingCoordinator`, created by the first who asks).

    The controller creates it on its first request and gives the request 5 s
    (`AUTOSCALING_REQUESTS_GET_TIMEOUT_S`); on busy cores a new actor process can take longer
    to start, and the controller then prints a warning with a traceback on a run that goes
    on fine (seen once in CI, during `tests/e2e/test_demo.py`). Started here, it has the
    controller's own start-up as a head start. Without that module (another Ray), nothing."""
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:
        return
    get_or_create_autoscaling_coordinator()


def cpus_per_worker(plan: Plan) -> int:
    """CPUs for each worker (its data loading and threads) that every node can give: per GPU
    on the GPU nodes, or the node's share on the `cpu` profile."""
    import ray

    alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if plan.world.profile.is_gpu:
        shares = [r.get("CPU", 0.0) / r["GPU"] for r in alive if r.get("GPU", 0.0) >= 1]
    else:
        per_node = -(-plan.world.world_size // max(1, len(alive)))
        shares = [r.get("CPU", 0.0) / per_node for r in alive if r.get("CPU", 0.0) >= 1]
    return max(1, int(min(shares))) if shares else 1


def absolute_output(spec: JobSpec) -> JobSpec:
    """`output.dir` is relative to where the command runs; workers run elsewhere."""
    if is_uri(spec.output.dir):
        raise UserError(
            f"output.dir={spec.output.dir}: object-store run directories are not supported yet",
            hint="use a local or shared-filesystem path (on a cluster: one every node mounts)",
        )
    spec = spec.model_copy(deep=True)
    spec.output.dir = str(Path(spec.output.dir).expanduser().absolute())
    return spec


# --------------------------------------------------------------------------- driver


def prepare_model(spec: JobSpec) -> None:
    """Build a `tiny:<type>` model once here, not concurrently in every worker."""
    name = spec.model.name_or_path
    if name.startswith("tiny:"):
        from trainer.models.tiny.folder import tiny_model_path

        tiny_model_path(name.removeprefix("tiny:"))


class _StopOnSignal:
    """Driver side of a graceful stop: the first signal writes STOP, a second Ctrl-C aborts."""

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = name
        self.run_dir.request_stop(f"{name} to the driver (pid {os.getpid()})")
        print(
            f"\n{name}: the workers will save a checkpoint at the next step and stop "
            "(Ctrl-C again to abort without it)",
            file=sys.stderr,
            flush=True,
        )


class _TailProgress(threading.Thread):
    """Show the workers' progress in the driver by tailing metrics.jsonl."""

    def __init__(self, run_dir: RunDir) -> None:
        super().__init__(daemon=True, name="vlaunch-progress")
        self.run_dir = run_dir
        self.done = threading.Event()
        self._display: Any = None

    def run(self) -> None:
        import json

        from trainer.progress import ProgressDisplay

        offset = (
            self.run_dir.metrics_file.stat().st_size if (self.run_dir.metrics_file.exists()) else 0
        )
        while not self.done.wait(0.5):
            status = self.run_dir.read_status() or {}
            if self._display is None and status.get("state") == "running":
                self._display = ProgressDisplay(
                    int(status["total_steps"]), int(status["step"]), tty=True
                )
            try:
                with self.run_dir.metrics_file.open() as f:
                    f.seek(offset)
                    chunk = f.read()
            except OSError:
                continue
            lines = chunk.split("\n")
            offset += len(chunk) - len(lines[-1])
            for line in lines[:-1]:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("kind") == "train" and self._display is not None:
                    self._display.update(record)
        if self._display is not None:
            self._display.close()


def _fit_in_thread(trainer: Any) -> Any:
    """`trainer.fit()` off the main thread: from the main thread, Ray Train installs a SIGINT
    handler that aborts the run at once, where we want a checkpoint first. Signals still
    reach our handlers, which run in the main thread while it waits here."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # re-raised in the main thread
            outcome["error"] = e

    thread = threading.Thread(target=target, name="vlaunch-fit", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(timeout=0.5)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def run_driver(spec: JobSpec, plan: Plan, *, own_cluster: bool = False) -> int:
    """Run (or resume) `spec` on the connected Ray cluster: 0 finished, 75 stopped.
    `own_cluster`: the launch started that cluster and stops it after the run (`vlaunch
    local`), so Ray Train's helpers for a cluster that outlives it are left out."""
    from ray.train import TrainingFailedError

    from trainer.resume_check import check_resume

    spec = absolute_output(spec)
    run_dir = RunDir.for_spec(spec.output.dir, spec.name)
    check_resume(spec, plan, run_dir)  # before anything of the run is written
    prepare_model(spec)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    run_dir.clear_stop()
    run_dir.clear_user_error()
    tty = sys.stdout.isatty()
    if not own_cluster:
        start_autoscaling_coordinator()
    trainer = make_trainer(spec, plan, quiet=tty, driver=driver_identity(), own_cluster=own_cluster)
    tail = _TailProgress(run_dir) if tty else None
    started = time.monotonic()
    with _StopOnSignal(run_dir):
        if tail is not None:
            tail.start()
        try:
            _fit_in_thread(trainer)
        except TrainingFailedError as e:
            _raise_user_error(run_dir)
            _fail(run_dir, e)
            print(f"training failed after {time.monotonic() - started:.0f}s:\n{e}", file=sys.stderr)
            return 1
        finally:
            if tail is not None:
                tail.done.set()
                tail.join(timeout=5)
            # Ray's empty probe file from checking the storage at the start: not the run's
            (run_dir.path / ".validate_storage_marker").unlink(missing_ok=True)
    _raise_user_error(run_dir)
    status = run_dir.read_status() or {}
    if status.get("state") == "stopped":
        print(
            f"stopped at step {status.get('step')}/{status.get('total_steps')}: a checkpoint "
            f"is in {run_dir.path}; run the same command again to resume",
            file=sys.stderr,
        )
        return EXIT_STOPPED
    return 0


def _raise_user_error(run_dir: RunDir) -> None:
    """Raise the user error a worker recorded (status.json says failed when the run's files
    had been written; else the run is left as it was)."""
    recorded = run_dir.read_user_error()
    if recorded is None:
        return
    error, claimed = recorded
    if claimed:
        _fail(run_dir, error)
    run_dir.clear_user_error()
    raise error


def _fail(run_dir: RunDir, error: BaseException) -> None:
    """status.json says failed, at the step of the last complete checkpoint."""
    import contextlib

    from trainer.checkpoint import TrainerState
    from trainer.host import remove_partials

    remove_partials(run_dir)  # frees the space status.json needs after a full disk
    status = run_dir.read_status() or {}
    latest = run_dir.latest_checkpoint()
    step = TrainerState.read(latest).step if latest is not None else 0
    text = error.render() if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    extra = {"user_error": text} if isinstance(error, UserError) else {}
    with contextlib.suppress(OSError):
        run_dir.write_status(
            "failed",
            step=step,
            total_steps=status.get("total_steps"),
            error=text[:2000],
            **extra,
        )


def driver_identity() -> dict[str, Any]:
    """Who runs the run (status.json says it, so a run whose driver died is seen as such)."""
    import socket

    return {"host": socket.gethostname(), "pid": os.getpid()}
