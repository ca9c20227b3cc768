"""The fine-tuning loop: setup, train, save_checkpoint, cleanup (torchtune's recipe shape).

Plain PyTorch, the same function in one process, under torchrun, and inside a Ray Train
worker (`trainer.ray_host`): only the `Host` differs (where checkpoints go, what to resume).

One optimizer step:
  1. take `grad_accum_steps` micro batches; count their target tokens and all-reduce the count
     (together with the stop flags, one collective);
  2. forward/backward each micro batch with loss `sum(CE) * world / tokens_in_step`
     (gradient sync only on the last micro batch; under `train.deterministic`, `sum(CE) /
     tokens_in_step`, every micro batch's gradient gathered and summed in the global
     micro-batch order: `trainer.deterministic`);
  3. clip, step the optimizer and the LR schedule;
  4. log, checkpoint every `train.checkpoint_every` steps, or at a stop request.

Exact resume: the data position is the optimizer step (the sampler's global order does not
depend on the world size), the LR schedule and optimizer come from the checkpoint, and the
RNGs are re-seeded at every step from (seed, step, rank) *after* the step's batches are
fetched (a data loader draws from the RNG when an epoch starts), so a resumed run computes the
same updates as an uninterrupted one: bit for bit on the same world size, and with
`train.deterministic` (dropout then seeded per global micro batch) on any world size.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from trainer import api, dist, faults
from trainer.batches import micro_batches
from trainer.checkpoint import TrainerState, load_weights, restore_training_state, spec_yaml
from trainer.checkpoint import write_checkpoint as _write_checkpoint
from trainer.host import Host, LocalHost, disk_problem, tidy_for_resume
from trainer.hostmem import HostMemoryGuard
from trainer.loss import target_tokens
from trainer.rundir import RunDir, write_json_atomic
from trainer.seeding import seed_everything, step_seed
from trainer.step_sync import Exchanged, StepSync
from trainer.stop import StopRequest
from vlaunch_core.errors import ProblemReport, UserError

if TYPE_CHECKING:
    from trainer.data.build import TrainData
    from trainer.evaluate import Evaluator
    from trainer.metrics import MetricsWriter
    from trainer.progress import ProgressDisplay
    from trainer.strategies.base import Strategy
    from vlaunch_core.plan import Plan
    from vlaunch_core.spec import JobSpec

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    """A finished optimizer step whose totals are still on the device."""

    step: int
    lr: float
    tokens: float
    t_start: float
    out: api.StepOutput


@dataclass
class TrainResult:
    state: Literal["finished", "stopped"]
    step: int
    total_steps: int
    run_dir: Path
    loss: float | None


class Recipe:
    """One training run on this rank. `train(spec)` below is the whole life cycle."""

    def __init__(
        self,
        spec: JobSpec,
        host: Host | None = None,
        *,
        quiet: bool = False,
        plan: Plan | None = None,
        owner: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.owner = owner
        """Who runs the run (the Ray driver's host and pid; else this process): status.json
        names it, so that a run whose owner died is not taken for a running one."""
        self.host = host
        self.quiet = quiet
        self.launch_plan = plan
        """The plan the launch computed (None: plan here, e.g. a bare torchrun)."""
        self.run_dir = RunDir.for_spec(spec.output.dir, spec.name)
        self.metrics: MetricsWriter | None = None
        self.progress: ProgressDisplay | None = None
        self.evaluator: Evaluator | None = None
        self.last_loss: float | None = None
        self.last_saved_step = -1
        self.claimed = False
        """Whether setup got as far as writing the run's files (before, a failure leaves the
        run exactly as it was, status.json included)."""

    # ================================================================== setup

    def setup(self) -> None:
        from trainer.schedule import build_scheduler, resync_scheduler
        from vlaunch_core.plan import make_plan, plan_for_world
        from vlaunch_core.profiles import resolve_world

        t_setup = time.perf_counter()
        spec, tr = self.spec, self.spec.train
        given = self.launch_plan
        use_gpu = (given.world if given is not None else resolve_world(spec)).profile.is_gpu
        self.env = env = dist.init_distributed(use_gpu=use_gpu, timeout_minutes=tr.timeout_minutes)
        self.plan: Plan = (
            plan_for_world(given, spec, env.world_size)
            if given is not None
            else make_plan(spec, world_size=env.world_size)
        )
        self.host_memory = HostMemoryGuard.for_plan(env, self.plan, tr.strategy).start()
        self.sync = StepSync(env, self.host_memory)
        self.batch = self.plan.batch
        self.heartbeat = dist.Heartbeat(env.rank, env.world_size)
        self.stop = StopRequest(self.run_dir, env.rank)
        self.stop.install_signal_handlers()
        if self.host is None:
            self.host = LocalHost(self.run_dir, tr.keep_last, env.rank)
        if self.owner is None:
            self.owner = {"host": socket.gethostname(), "pid": os.getpid()}

        with self.host.resume_from() as ckpt:
            # Everything that must match is checked before anything of the run is written.
            self.resume = TrainerState.read(ckpt) if ckpt is not None else None
            if ckpt is not None:
                self._check_resume(ckpt)
            if env.is_main:
                self.run_dir.path.mkdir(parents=True, exist_ok=True)
                tidy_for_resume(self.run_dir, ckpt)
                self.run_dir.spec_file.write_text(spec_yaml(spec))
                write_json_atomic(self.run_dir.plan_file, self.plan.to_json())
            self.claimed = True
            seed_everything(tr.seed)
            self.strategy: Strategy = api.build_strategy(spec, env, self.plan)
            if self.resume is not None:
                self.strategy.check_resume(self.resume.world_size)
            model, param_groups, layer_classes = self._build_model()
            if ckpt is not None:
                with _loading(ckpt):
                    load_weights(model, ckpt)
            elif spec.model.adapter is not None:  # continue training from an adapter
                from trainer.continue_from import init_from_adapter

                init_from_adapter(model, spec.model.adapter)
            self.strategy.prepare(model, param_groups, layer_classes=layer_classes)
            self.loss = api.build_loss(spec, self.strategy)
            self.train_data: TrainData = self._build_data()
            self.total_steps = self._total_steps()
            assert self.strategy.optimizer is not None
            self.scheduler = build_scheduler(self.strategy.optimizer, tr, self.total_steps)
            if ckpt is not None:
                with _loading(ckpt):
                    restore_training_state(ckpt, strategy=self.strategy, scheduler=self.scheduler)
                # the schedule of *this* spec at the step resumed from (a raised max_steps
                # must not start at the old schedule's final learning rate)
                resync_scheduler(self.scheduler)
        self.start_step = self.resume.step if self.resume else 0
        if self.resume is not None and self.resume.total_steps != self.total_steps:
            logger.warning(
                "the run had %d steps in total, this spec gives %d: the LR schedule is "
                "recomputed for %d (the resume is not exact)",
                self.resume.total_steps,
                self.total_steps,
                self.total_steps,
            )
        if self.resume is not None:
            dist.log_rank_zero(
                logger,
                env.rank,
                "resuming %s at step %d/%d (%d samples consumed; was %d ranks, now %d)",
                spec.name,
                self.start_step,
                self.total_steps,
                self.resume.samples_consumed,
                self.resume.world_size,
                env.world_size,
            )
        self._setup_observers()
        dist.log_rank_zero(
            logger,
            env.rank,
            "set up in %.1fs (model, data, strategy)",
            time.perf_counter() - t_setup,
        )

    def _check_resume(self, ckpt: Path) -> None:
        """Everything the checkpoint fixes must match this spec (trainer/resume_check.py)."""
        from trainer.resume_check import resume_problems, saved_spec
        from trainer.safe_load import scan

        assert self.resume is not None
        scan(ckpt)  # every .pt file weights-only loadable, before anything is loaded
        saved = saved_spec(ckpt)
        problems = resume_problems(saved, self.resume, self.spec, self.plan)
        if problems:
            raise ProblemReport(
                title=f"this spec cannot continue run '{self.spec.name}' (resuming from "
                f"{ckpt.name}, step {self.resume.step}); nothing was changed. Keep these "
                "keys as the run had them, or give the job a new name to start a new run",
                problems=problems,
                source=str(self.run_dir.path),
            )
        if saved.train.deterministic != self.spec.train.deterministic and self.env.is_main:
            logger.warning(
                "the run was trained with train.deterministic=%s, this spec says %s: it goes "
                "on, with the gradients summed another way (the resume is not exact)",
                saved.train.deterministic,
                self.spec.train.deterministic,
            )

    def _build_model(self) -> tuple[Any, Any, tuple[type, ...]]:
        spec = self.spec
        # fp32 master weights for the optimizer are read now if a checkpoint or an adapter is
        # loaded into them next; else, under low-memory loading, later, shard by shard
        built = api.build_model(
            spec,
            self.plan.precision,
            low_memory=self.strategy.loads_shards,
            materialize=self.resume is not None or spec.model.adapter is not None,
        )
        self.built = built
        self.processor = built.processor
        self.family = built.family
        self.tuning_report = built.tuning_report
        if self.env.is_main:
            built.tuning_report.save(self.run_dir.path)
        return built.model, built.param_groups, built.layer_classes

    def _build_data(self) -> TrainData:
        return api.build_data(self.spec, self.built, self.env, self.batch)

    def _total_steps(self) -> int:
        tr = self.spec.train
        if tr.max_steps is not None:
            return tr.max_steps
        return max(1, math.ceil(tr.epochs * self.train_data.sampler.steps_per_epoch))

    def _setup_observers(self) -> None:
        from trainer.evaluate import Evaluator
        from trainer.metrics import MetricsWriter

        if self.spec.data.eval_mixture is not None and self.processor is not None:
            # No activations are kept for backward: a rank's whole step fits (capped).
            per_device = self.batch.micro_batch_size * self.batch.grad_accum_steps
            self.evaluator = Evaluator(
                self.spec,
                self.processor,
                self.family,
                self.strategy,
                batch_size=min(32, per_device),
                loss=self.loss,
            )
        if not self.env.is_main:
            return
        self.metrics = MetricsWriter(self.run_dir, self.spec, start_step=self.start_step)
        if self.resume is not None:
            self.metrics.log(
                {
                    "kind": "resume",
                    "step": self.start_step,
                    "world_size": self.env.world_size,
                    "grad_accum_steps": self.batch.grad_accum_steps,
                    "micro_batch_size": self.batch.micro_batch_size,
                }
            )
        self.run_dir.write_status(
            "running", step=self.start_step, total_steps=self.total_steps, owner=self.owner
        )

    # ================================================================== train

    def train(self) -> TrainResult:
        self.step = self.start_step
        try:
            return self._train()
        except UserError:
            raise
        except Exception as e:
            full = disk_problem(self.run_dir, e)
            if full is not None:
                raise full from None
            if not isinstance(e, RuntimeError):
                raise
            timeout = dist.explain_timeout(
                e,
                heartbeat=self.heartbeat,
                step=self.step + 1,
                timeout_minutes=self.spec.train.timeout_minutes,
            )
            if timeout is None:
                raise
            raise timeout from e

    def _train(self) -> TrainResult:
        from trainer.data.build import loader_settings

        spec, tr, env, batch = self.spec, self.spec.train, self.env, self.batch
        if self.start_step == 0 and self.evaluator is not None:
            self._evaluate(0, before=True)
        # from_pretrained returns the model in eval mode: dropout (LoRA's too) must be on
        self.strategy.base_model.train()
        if env.is_main and not self.quiet:
            from trainer.progress import ProgressDisplay

            self.progress = ProgressDisplay(
                self.total_steps,
                self.start_step,
                every_steps=max(tr.log_every, self.total_steps // 20),
            )
        batches = micro_batches(
            self.train_data,
            start_step=self.start_step,
            **loader_settings(spec, self.plan, self._local_world_size(), env.rank),
            pin_memory=env.device.type == "cuda",
        )
        step = self.start_step
        stopped = False
        # A step's totals stay on the device until the next step's exchange (trainer.step_sync)
        pending: _Pending | None = None
        while step < self.total_steps:
            data_error: UserError | None = None
            try:
                micro = [next(batches) for _ in range(batch.grad_accum_steps)]
            except UserError as e:  # this rank's data: every rank learns it at the reduce
                data_error, micro = e, []
            seed_everything(step_seed(tr.seed, step, env.rank))  # after the data: see above
            self.heartbeat.beat(step + 1)  # arrived at this step's first collective
            got = self.sync.exchange(  # the step's one collective and one host sync
                targets=sum(target_tokens(m["labels"]) for m in micro),
                stop=self.stop.local_flag() > 0,
                data_error=data_error is not None,
                previous=pending.out if pending is not None else None,
                memory=pending is not None and self._memory_due(pending.step),
            )
            t_start = time.perf_counter()
            if pending is not None:
                self._report(pending, got, t_start)
                pending = None
            if got.data_error:  # this rank's data: every rank learns it here
                dist.agree(data_error)
            if got.stop:
                stopped = True
                break
            out = api.train_step(self.strategy, micro, got.tokens, self.loss, step=step)
            lr = float(self.scheduler.get_last_lr()[0])
            self.scheduler.step()
            step = self.step = step + 1
            pending = _Pending(step, lr, got.tokens, t_start, out)
            faults.maybe_inject(self.run_dir, env.rank, step)
            checkpoint = step % tr.checkpoint_every == 0 or step == self.total_steps
            evaluate = bool(
                self.evaluator is not None
                and tr.eval_every
                and step % tr.eval_every == 0
                and step < self.total_steps
            )
            if checkpoint or evaluate:  # the step's record first; last_loss for the checkpoint
                self._flush(pending)
                pending = None
            if checkpoint:
                self.save_checkpoint(step)
            if evaluate:
                self._evaluate(step)
        if stopped:
            if self.last_saved_step != step:
                self.save_checkpoint(step, stopped=True)
            self._finish("stopped", step)
            return TrainResult("stopped", step, self.total_steps, self.run_dir.path, self.last_loss)
        if self.evaluator is not None:
            self._evaluate(step)
        self._export()
        self._finish("finished", step)
        return TrainResult("finished", step, self.total_steps, self.run_dir.path, self.last_loss)

    def _memory_due(self, step: int) -> bool:
        """Whether step `step`'s record gets host memory (a sample on every rank)."""
        every = self.spec.train.host_memory_every
        return step == self.start_step + 1 or step % every == 0 or step == self.total_steps

    def _flush(self, pending: _Pending) -> None:
        """Report a step now, in an exchange of its own (before a checkpoint or evaluation,
        and at the last step, which always checkpoints)."""
        got = self.sync.exchange(previous=pending.out, memory=self._memory_due(pending.step))
        self._report(pending, got, time.perf_counter())

    def _report(self, pending: _Pending, got: Exchanged, now: float) -> None:
        """Log step `pending.step` from the exchange that carried its totals."""
        totals = got.previous
        assert totals is not None
        elapsed = now - pending.t_start
        batch = self.batch
        self.last_loss = totals.loss_sum / max(pending.tokens, 1.0)
        self._log(
            {
                "kind": "train",
                "step": pending.step,
                "loss": self.last_loss,
                "lr": pending.lr,
                "grad_norm": totals.grad_norm,
                "target_tokens": int(pending.tokens),
                "samples": pending.step * batch.global_batch_size,
                "tokens_per_s": totals.input_tokens / elapsed,
                "samples_per_s": batch.global_batch_size / elapsed,
                "step_time_s": elapsed,
                **self._device_memory(),
                **(got.memory or {}),
            },
            pending.step,
        )

    def _local_world_size(self) -> int:
        import os

        return int(os.environ.get("LOCAL_WORLD_SIZE", self.env.world_size))

    def _device_memory(self) -> dict[str, Any]:
        """Rank 0's peak device memory since the last record (GPUs; no device sync)."""
        import torch

        if self.env.device.type != "cuda":
            return {}
        peak = torch.cuda.max_memory_allocated(self.env.device) / 1024**3
        torch.cuda.reset_peak_memory_stats(self.env.device)
        return {"peak_mem_gib": peak}

    def _log(self, record: dict[str, Any], step: int) -> None:
        if not self.env.is_main:
            return
        if step % self.spec.train.log_every == 0 or step == self.total_steps:
            assert self.metrics is not None
            self.metrics.log(record)
        if self.progress is not None:
            self.progress.update(record)

    def _evaluate(self, step: int, *, before: bool = False) -> None:
        assert self.evaluator is not None
        t0 = time.perf_counter()
        result = self.evaluator.run()
        if not self.env.is_main:
            return
        record = {"kind": "eval", "step": step, **result.metrics()}
        assert self.metrics is not None
        self.metrics.log(record)
        logger.info(
            "held-out at step %d: %s (%.1fs)", step, result.summary(), time.perf_counter() - t0
        )
        self.evaluator.record(self.run_dir, result, before=before, step=step)

    # ================================================================== checkpoints

    def save_checkpoint(self, step: int, *, stopped: bool = False) -> None:
        """Every rank writes its part; the host commits it (rename, or Ray upload)."""
        state = TrainerState(
            step=step,
            samples_consumed=step * self.batch.global_batch_size,
            total_steps=self.total_steps,
            global_batch_size=self.batch.global_batch_size,
            micro_batch_size=self.batch.micro_batch_size,
            grad_accum_steps=self.batch.grad_accum_steps,
            world_size=self.env.world_size,
            strategy=self.spec.train.strategy,
            precision=self.plan.precision,
            seed=self.spec.train.seed,
            loss=self.last_loss,
            stopped=stopped,
        )

        def write(folder: Path) -> None:
            _write_checkpoint(
                folder,
                strategy=self.strategy,
                scheduler=self.scheduler,
                state=state,
                spec=self.spec,
                plan=self.plan,
            )

        assert self.host is not None
        t0 = time.perf_counter()
        self.host.save(step, write, {"step": step, "loss": self.last_loss or float("nan")})
        self.last_saved_step = step
        if self.env.is_main:
            logger.info("checkpoint at step %d saved in %.1fs", step, time.perf_counter() - t0)
            self.run_dir.write_status(
                "running",
                step=step,
                total_steps=self.total_steps,
                checkpoint=asdict(state),
                owner=self.owner,
            )

    def _export(self) -> None:
        from trainer.export import export_final

        export_final(self.spec, self.strategy, self.run_dir)

    def _finish(self, state: Literal["finished", "stopped"], step: int) -> None:
        if not self.env.is_main:
            return
        from trainer.metrics import plot_loss

        if self.progress is not None:
            self.progress.close()
            self.progress = None
        plot_loss(self.run_dir.metrics_file, self.run_dir.loss_plot)
        self.run_dir.write_status(
            state,
            step=step,
            total_steps=self.total_steps,
            loss=self.last_loss,
            reason=self.stop.reason,
        )
        if state == "stopped":
            self.run_dir.clear_stop()
            logger.warning(
                "stopped at step %d/%d (%s); a checkpoint was saved: run the same "
                "command again to resume",
                step,
                self.total_steps,
                self.stop.reason,
            )

    # ================================================================== cleanup

    def failed(self, error: BaseException) -> None:
        """Record the failure in status.json (rank 0), keeping the last checkpoint's step."""
        env = getattr(self, "env", None)
        if env is None or not env.is_main or isinstance(error, KeyboardInterrupt):
            return
        if not self.claimed:  # refused before the run was touched: leave its status as is
            return
        extra: dict[str, Any] = {}
        if isinstance(error, UserError):  # the driver re-raises it as the user's mistake
            extra = {"user_error": error.render()}
        resume: TrainerState | None = getattr(self, "resume", None)
        resumed = resume.step if resume is not None else 0
        with contextlib.suppress(OSError):
            self.run_dir.write_status(
                "failed",
                step=max(self.last_saved_step, resumed, 0),
                total_steps=getattr(self, "total_steps", None),
                error=f"{type(error).__name__}: {error}"[:2000],
                **extra,
            )

    def cleanup(self) -> None:
        if hasattr(self, "host_memory"):
            self.host_memory.stop()
        if hasattr(self, "stop"):
            self.stop.restore_signal_handlers()
        if self.progress is not None:
            self.progress.close()
        if self.metrics is not None:
            self.metrics.close()


@contextlib.contextmanager
def _loading(ckpt: Path) -> Any:
    """Loading a checkpoint that passed the commit check but does not fit the model (a bug or
    a hand-edited checkpoint): one user error naming it, not a retried traceback."""
    try:
        yield
    except UserError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{ckpt}: cannot be loaded into this model: {first}",
            hint="the checkpoint does not belong to this spec's model and tuning",
        ) from None


def train(
    spec: JobSpec, host: Host | None = None, *, quiet: bool = False, plan: Plan | None = None
) -> TrainResult:
    """Run (or resume) the job `spec` on this rank with the launch's `plan` (planned here when
    None); returns when finished or stopped."""
    recipe = Recipe(spec, host, quiet=quiet, plan=plan)
    try:
        recipe.setup()
        return recipe.train()
    except BaseException as e:
        recipe.failed(e)
        raise
    finally:
        recipe.cleanup()
