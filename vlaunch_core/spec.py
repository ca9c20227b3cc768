"""The job spec: one YAML file that says what to fine-tune, on what data, how, and where.

Every option and its default is defined once, here (or in the backend option models this
module includes). Reading, overriding and validating a spec file is `vlaunch_core.spec_load`
(`load_spec`), which reports *all* problems of a spec in one `ProblemReport`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, field_validator

from vlaunch_core.k8s_options import KubernetesOptions
from vlaunch_core.section import Section
from vlaunch_core.slurm_options import SlurmOptions

Auto = Literal["auto"]
#: Bounds that keep every computation on a number quick (the batch planner enumerates
#: divisors) and far above any real job.
MAX_BATCH = 1 << 24  # = vlaunch_core.planner.MAX_BATCH
PositiveInt = Annotated[int, Field(ge=1)]
BatchInt = Annotated[int, Field(ge=1, le=MAX_BATCH)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Strategy = Literal["ddp", "fsdp", "zero2", "zero3", "offload"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]

#: Printable ASCII without '/': the run directory's name, Ray Train's run name (its metrics
#: refuse other text), the Slurm job name and the source of the Kubernetes object names.
_NAME = re.compile(r"^[\x20-\x2e\x30-\x7e]{1,100}$")
#: What a process environment takes as a variable name (POSIX): Ray's workers, the Slurm
#: script's `export` and a Kubernetes container's `env` refuse anything else.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# --------------------------------------------------------------------------- model


class ModelSpec(Section):
    name_or_path: str
    """Hub id (`llava-hf/llava-1.5-7b-hf`), local folder (`./models/x`), `tiny:<model_type>`
    (a tiny random VLM built from config, for tests and the demo) or `random:<name>` (a
    real-size architecture with random weights, for benchmarks)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `name_or_path` is a hub id."""
    trust_remote_code: bool = False
    """Allow model code from the hub (off: only transformers' own classes are used)."""
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """Attention kernel."""
    adapter: str | None = None
    """Continue training: a LoRA adapter folder or a finished run directory whose LoRA (and
    other saved trained weights, such as the projector) this run starts from, then trains on
    this spec's data. The tuning must train at least what the adapter holds (same LoRA r,
    alpha and targets); a new name starts a new run."""


# --------------------------------------------------------------------------- data


class DatasetEntry(Section):
    """One dataset of a registry (compatible with VILA's `registry/datasets/*.yaml`)."""

    target: str | None = Field(default=None, alias="_target_")
    """VILA's dataset class (`llava.data.LLaVADataset`); informational."""
    data_path: str
    """Where the samples are: a JSON array or JSON Lines file; a Parquet file or a folder of
    Parquet shards; a folder written by `datasets`' `save_to_disk`; WebDataset `.tar` shards
    (a file, a folder, a brace pattern such as `shards/train-{0000..0099}.tar`, or a wids
    shard index `.json`); or, with `source: hf`, a Hugging Face dataset id."""
    source: Literal["auto", "json", "parquet", "arrow", "webdataset", "hf"] = "auto"
    """How to read `data_path`: `auto` detects it from the path (`.json`/`.jsonl`: json,
    `.parquet` or a folder of them: parquet, a `save_to_disk` folder or `.arrow` files: arrow,
    `.tar` shards: webdataset); `hf` takes `data_path` as a hub dataset id, resolved in the
    local Hugging Face cache (`HF_HOME`), downloaded only when the hub is reachable."""
    config_name: str | None = None
    """Hugging Face dataset configuration (subset) of a `source: hf` dataset."""
    split: str | None = None
    """Split of a `source: hf` dataset or of a `save_to_disk` DatasetDict folder (default
    `train`)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of a `source: hf` dataset."""
    media_dir: str | None = None
    """Root of the images/videos the samples name by path (default: the folder of
    `data_path`, `data_path` itself when it is a folder, a hub dataset's snapshot folder).
    Media embedded in the data (bytes) need none."""
    is_video: bool = False
    """VILA's flag for video datasets (samples use `video`)."""
    format: Literal["auto", "vila", "messages"] = "auto"
    """`vila` (LLaVA `conversations`), `messages` (OpenAI-style), or `auto` (per sample)."""
    text_field: str | None = None
    """Column holding the conversation (`dataset_text_field`); default `conversations` for
    VILA samples, `messages` for messages samples. Either turn style may sit in any column."""
    image_field: str | None = None
    """Column holding the images (`dataset_image_field`): paths, bytes, or Hugging Face
    `Image` cells; default `image` (VILA) / `images` (messages)."""
    video_field: str | None = None
    """Column holding the videos: paths or bytes; default `video` (VILA) / `videos`
    (messages)."""
    num_frames: int | None = Field(default=None, ge=1)
    """Frames sampled per video for this dataset (default: `data.video.num_frames`)."""
    description: str | None = None
    """Free text."""


class ImageOptions(Section):
    aspect_ratio: Literal["resize", "pad"] = "resize"
    """`resize`: let the processor resize; `pad`: pad to a square first (LLaVA's `pad`)."""
    max_pixels: int = Field(default=89_478_485, ge=1)
    """Images larger than this are rejected (decompression-bomb guard)."""


class VideoOptions(Section):
    num_frames: int = Field(default=8, ge=1, le=1024)
    """Frames sampled uniformly from each video."""
    fps: float | None = Field(default=None, gt=0)
    """Sample at this rate instead of a fixed count (capped at `max_frames`)."""
    max_frames: int = Field(default=64, ge=1)
    """Upper bound on frames per video when sampling by `fps`."""


class DataSpec(Section):
    mixture: str
    """Datasets joined with `+`, `name*N` repeats one N times (`SampleQA+SampleVideo*2`)."""
    registry: list[str] = Field(default_factory=list)
    """Registry YAML files that define dataset names (VILA format plus vlaunch keys)."""
    datasets: dict[str, DatasetEntry] = Field(default_factory=dict)
    """Datasets defined inline (same keys as a registry entry)."""
    eval_mixture: str | None = None
    """Held-out mixture for evaluation (loss, and exact match for short answers)."""
    max_length: int = Field(default=2048, ge=16, le=1_048_576)
    """Maximum tokens per sample, image/video tokens included."""
    overlength: Literal["truncate_text", "drop", "error"] = "truncate_text"
    """Samples over `max_length`: cut trailing text turns (never inside media tokens), drop
    the sample, or stop with an error."""
    packing: bool = False
    """Pack several samples per row (attention never crosses sample boundaries)."""
    group_by_length: bool = False
    """Length-grouped sampler (LLaVA's `group_by_modality_length`)."""
    shuffle: bool = True
    """Shuffle the training mixture every epoch (seeded, resumable)."""
    num_workers: NonNegativeInt | Auto = "auto"
    """Data-loader worker processes per rank (`auto`: from cores and host RAM)."""
    prefetch_factor: PositiveInt | Auto = "auto"
    """Batches prefetched per worker (`auto`: an optimizer step's micro batches across the
    workers, at least 2, where host RAM allows)."""
    worker_memory_mib: PositiveInt | Auto = "auto"
    """Host RAM one data-loader worker uses, for `vlaunch plan` and `auto` workers (`auto`:
    a base plus the batches it has in flight; see docs/host-memory.md)."""
    system_prompt: str | None = None
    """System prompt for samples that have none."""
    image: ImageOptions = Field(default_factory=ImageOptions)
    """Image options."""
    video: VideoOptions = Field(default_factory=VideoOptions)
    """Video options."""


# --------------------------------------------------------------------------- tuning


class LoraOptions(Section):
    r: int = Field(default=16, ge=1, le=4096)
    """LoRA rank."""
    alpha: float | None = Field(default=None, gt=0)
    """LoRA alpha (default: 2 x r)."""
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    """LoRA dropout."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""
    target_modules: list[str] | str | None = None
    """Language-model LoRA targets: module names or one regex (default: every Linear inside
    the language model's layers; names are scoped to the language model so the vision tower
    is never hit by accident)."""
    vision_target_modules: list[str] | str | None = None
    """Vision-tower LoRA targets (default: every Linear inside the vision tower's layers)."""

    @property
    def resolved_alpha(self) -> float:
        return self.alpha if self.alpha is not None else 2.0 * self.r


class LrMultipliers(Section):
    vision_tower: float = Field(default=0.1, gt=0)
    """Vision tower LR = train.lr x this (VILA: 5-50x smaller than the LLM)."""
    projector: float = Field(default=1.0, gt=0)
    """Projector LR = train.lr x this."""
    language_model: float = Field(default=1.0, gt=0)
    """Language model LR = train.lr x this."""


class TuningSpec(Section):
    preset: str | None = "lora_llm"
    """A VILA-named preset (see `vlaunch models --presets`); explicit module modes override it."""
    vision_tower: Literal["full", "lora", "layernorm", "frozen"] | None = None
    """Vision tower: full fine-tuning, LoRA, LayerNorm-only, or frozen."""
    projector: Literal["full", "frozen"] | None = None
    """Multimodal projector: trained (default in every preset) or frozen."""
    language_model: Literal["full", "lora", "qlora", "frozen"] | None = None
    """Language model: full, LoRA, QLoRA (4-bit NF4, CUDA only) or frozen."""
    lora: LoraOptions = Field(default_factory=LoraOptions)
    """LoRA options."""
    lr_multipliers: LrMultipliers = Field(default_factory=LrMultipliers)
    """Per-module learning-rate multipliers."""

    def modes(self) -> dict[str, str]:
        """The resolved mode of each module: the preset, then explicit overrides."""
        from vlaunch_core.models.presets import PRESETS

        base = {"vision_tower": "frozen", "projector": "full", "language_model": "frozen"}
        if self.preset is not None and self.preset in PRESETS:
            p = PRESETS[self.preset]
            base = {
                "vision_tower": p.vision_tower,
                "projector": p.projector,
                "language_model": p.language_model,
            }
        for module in ("vision_tower", "projector", "language_model"):
            value = getattr(self, module)
            if value is not None:
                base[module] = value
        return base

    def uses_lora(self) -> bool:
        m = self.modes()
        return m["vision_tower"] == "lora" or m["language_model"] in ("lora", "qlora")


# --------------------------------------------------------------------------- train


class TrainSpec(Section):
    global_batch_size: int = Field(default=16, ge=1, le=MAX_BATCH)
    """Samples per optimizer step across all devices: micro x accumulation x world, exactly."""
    micro_batch_size: BatchInt | Auto = "auto"
    """Samples per device per forward pass (`auto`: the largest that the memory estimate fits)."""
    grad_accum_steps: BatchInt | Auto = "auto"
    """Micro batches per optimizer step (`auto`: global / (micro x world))."""
    batch_rounding: Literal["exact", "down", "up"] = "exact"
    """If the global batch is not divisible by the world size: fail (`exact`), or use the
    nearest valid size below/above (said loudly in the plan)."""
    epochs: float = Field(default=1.0, gt=0, le=1e6)
    """Passes over the training mixture (ignored when `max_steps` is set)."""
    max_steps: int | None = Field(default=None, ge=1, le=10**12)
    """Optimizer steps to run (overrides `epochs`)."""
    lr: float = Field(default=1e-4, gt=0, le=1.0)
    """Peak learning rate of the language model (others via `tuning.lr_multipliers`)."""
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    """AdamW weight decay (not applied to norms and biases)."""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """AdamW (torch's, fused on CUDA; also under DeepSpeed, so per-module learning rates and
    the schedule apply) or SGD."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    eps: float = Field(default=1e-8, gt=0)
    """AdamW epsilon."""
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """LR schedule after warmup."""
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    """Fraction of steps spent warming up (ignored when `warmup_steps` is set)."""
    warmup_steps: int | None = Field(default=None, ge=0)
    """Warmup steps (overrides `warmup_ratio`)."""
    max_grad_norm: float = Field(default=1.0, ge=0.0)
    """Gradient clipping by global norm (0 disables)."""
    precision: Precision = "auto"
    """Compute precision (`auto`: bf16 where the hardware has it, else fp16 on GPU, fp32 on CPU)."""
    gradient_checkpointing: bool = True
    """Recompute activations in backward (non-reentrant) to save memory."""
    strategy: Strategy = "ddp"
    """DDP, FSDP (FSDP2), DeepSpeed ZeRO-2 / ZeRO-3, or `offload` (ZeRO-3 with CPU offload)."""
    loss: Literal["auto", "chunked", "liger", "plain"] = "auto"
    """Cross-entropy without full logits: `chunked` (chunks of target tokens inside the output
    layer, any device), `liger` (Liger-Kernel's fused kernel: CUDA, `pip install
    'vlaunch[liger]'`), `auto` (Liger where it runs, else chunked; the plain loss, logged,
    where the model's output layer cannot be fused), or `plain` (the model's full logits)."""
    seed: int = Field(default=42, ge=0, le=2**63 - 1)
    """Seed of weights init (LoRA), data order, dropout."""
    deterministic: bool = False
    """The same weights bit for bit on any world size (with the same micro batch), so that a
    run resumed on another number of ranks goes on exactly (on CPU; GPUs also need
    deterministic kernels, asked for but not guaranteed): each micro batch's gradient is kept
    apart and every rank's are summed in the global micro-batch order (an all-gather instead
    of DDP's all-reduce), dropout seeded per micro batch. Costs world x accumulation x
    trainable parameters of fp32 gradients per rank and more communication: for LoRA-sized
    trainable sets. `ddp` strategy only."""
    checkpoint_every: int = Field(default=200, ge=1)
    """Save a checkpoint every N optimizer steps (and at the end, and on SIGTERM/SIGUSR1)."""
    keep_last: int = Field(default=2, ge=1)
    """Checkpoints kept on disk (oldest deleted after a newer one is complete)."""
    eval_every: int | None = Field(default=None, ge=1)
    """Evaluate on `data.eval_mixture` every N steps (and always at the end)."""
    log_every: int = Field(default=1, ge=1)
    """Log metrics every N optimizer steps."""
    host_memory_every: int = Field(default=10, ge=1)
    """Sample each rank's host memory (RSS, loader workers, MemAvailable) for the metrics every
    N optimizer steps (and at the first and last)."""
    timeout_minutes: float = Field(default=30.0, gt=0, le=100_000)
    """Collective-communication (NCCL/gloo) timeout before a stalled rank is reported."""
    max_failures: int = Field(default=3, ge=0)
    """Worker-group restarts from the last checkpoint before the run fails (Ray FailureConfig)."""


# --------------------------------------------------------------------------- resources


class ResourcesSpec(Section):
    profile: str = "auto"
    """Hardware profile (`vlaunch profiles`): GPU memory, bf16, GPUs per node, host RAM.
    `auto` detects local GPUs (nvidia-smi) or falls back to `cpu`."""
    nodes: int = Field(default=1, ge=1, le=4096)
    """Number of nodes."""
    gpus_per_node: int | None = Field(default=None, ge=1, le=64)
    """Devices per node (default: the profile's). On the `cpu` profile: worker processes."""
    memory_headroom: float = Field(default=0.10, ge=0.0, lt=0.9)
    """Fraction of device memory kept free when choosing `auto` micro batch."""
    profiles: list[str] = Field(default_factory=list)
    """Extra hardware-profile YAML files."""


class OutputSpec(Section):
    dir: str = "runs"
    """Root of run directories: a local/shared path or an object-store URI Ray supports."""
    export: Literal["adapter", "merged", "none"] = "adapter"
    """Final export: a clean PEFT adapter (LoRA runs), a merged full model, or nothing."""


class WandbOptions(Section):
    project: str
    """W&B project (the API key comes from WANDB_API_KEY, never from this file)."""
    entity: str | None = None
    """W&B entity (team or user)."""


class MlflowOptions(Section):
    tracking_uri: str
    """MLflow tracking URI (credentials from the environment)."""
    experiment: str = "vlaunch"
    """MLflow experiment name."""


class TrackingSpec(Section):
    tensorboard: bool = True
    """Write TensorBoard event files to `<run>/tensorboard`."""
    wandb: WandbOptions | None = None
    """Log to Weights & Biases."""
    mlflow: MlflowOptions | None = None
    """Log to MLflow."""


# --------------------------------------------------------------------------- job


class JobSpec(Section):
    name: str
    """Run name: the run directory, the Ray run, the Slurm job and the Kubernetes objects are
    named after it. The same name resumes the same run."""
    model: ModelSpec
    """What to fine-tune."""
    data: DataSpec
    """What to train on."""
    tuning: TuningSpec = Field(default_factory=TuningSpec)
    """Which modules are trained and how."""
    train: TrainSpec = Field(default_factory=TrainSpec)
    """Optimisation."""
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    """Where it runs."""
    output: OutputSpec = Field(default_factory=OutputSpec)
    """Where results go."""
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    """Metrics backends."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for every worker (never secrets: use the environment or a
    Kubernetes Secret)."""
    slurm: SlurmOptions = Field(default_factory=SlurmOptions)
    """Slurm options (`vlaunch slurm`)."""
    k8s: KubernetesOptions = Field(default_factory=KubernetesOptions)
    """Kubernetes options (`vlaunch k8s`)."""

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not v.isascii():
            raise ValueError(
                "a run name is ASCII text: it names the Ray Train run (whose metrics refuse "
                "other characters), the Slurm job and the Kubernetes objects"
            )
        if not _NAME.match(v) or v in (".", "..") or v != v.strip():
            raise ValueError(
                "a run name is 1-100 printable ASCII characters, without '/', control "
                "characters or spaces at either end, and not '.' or '..' (it names the run's "
                "directory)"
            )
        return v

    @field_validator("env")
    @classmethod
    def _check_env(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not ENV_NAME.match(k)]
        if bad:
            raise ValueError(
                f"{', '.join(repr(k) for k in bad[:5])}: not an environment variable name "
                "(letters, digits and '_', not starting with a digit); the workers' "
                "environment cannot take it"
            )
        nul = [k for k, value in v.items() if "\x00" in value]
        if nul:
            raise ValueError(f"{', '.join(nul[:5])}: a value holds a NUL character")
        return v

    @property
    def run_dir(self) -> str:
        """Where this run's checkpoints, metrics and exports go."""
        root = self.output.dir
        if "://" in root:
            return root.rstrip("/") + "/" + self.name
        return str(Path(root).expanduser().absolute() / self.name)

    def document(self, **dump: Any) -> dict[str, Any]:
        """The spec as plain data to write or log anywhere (files, ConfigMaps, trackers):
        `model_dump(mode="json", by_alias=True, **dump)` with secret-looking values redacted
        (validation refuses them; this keeps one that got past it from being copied)."""
        from vlaunch_core.secrets import redact

        data: dict[str, Any] = redact(self.model_dump(mode="json", by_alias=True, **dump))
        return data

    def to_yaml(self, **dump: Any) -> str:
        """The resolved spec as YAML (every default written out), secrets redacted."""
        return yaml.safe_dump(self.document(**dump), sort_keys=False, allow_unicode=True)
