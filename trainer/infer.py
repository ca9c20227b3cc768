"""Generation with a fine-tuned model, prompted exactly as the run was trained.

The prompt goes through the same `SampleEncoder` as training (chat template, system prompt,
image padding, video frame sampling of the run's `data:` options), so the model sees at
inference what it saw in training. Decoding is greedy unless a temperature is given.

    trained = resolve("runs/demo")
    predictor = Predictor(load_trained(trained), max_new_tokens=32)
    [answer] = predictor.generate([single_prompt("What colour is the shape?", images=[img])])

A batch file is a dataset file (JSON array or JSON Lines, VILA `conversations` or OpenAI-style
`messages`) whose media paths are relative to the file's folder and must stay inside it. A
sample may end with a user turn (a question only); when it ends with an answer, that answer is
the reference that the prediction is compared with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlaunch_core.data.formats import Part, Sample, Turn
from vlaunch_core.errors import Problem, ProblemReport, UserError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from trainer.trained import LoadedTrained, Trained

logger = logging.getLogger(__name__)

SHOWN_PROBLEMS = 20
_PLACEHOLDER = Turn("assistant", (Part("text", "?"),))
"""Stands for the answer to generate (`encode_prompt` cuts the sample before it)."""


@dataclass(frozen=True)
class Prompt:
    """One question with its media, and the reference answer when there is one."""

    sample: Sample
    """Ends with an assistant turn: the reference, or a placeholder to generate."""
    reference: str | None
    media_root: Path | None = None
    """Media paths are resolved (and confined) under this folder; None: used as given."""


def single_prompt(
    text: str, *, images: Sequence[str | Path] = (), videos: Sequence[str | Path] = ()
) -> Prompt:
    """A one-turn question: the media first (as VILA places them), then the text."""
    parts = (
        *(Part("image") for _ in images),
        *(Part("video") for _ in videos),
        Part("text", text),
    )
    sample = Sample(
        (Turn("user", parts), _PLACEHOLDER),
        images=tuple(str(Path(i).expanduser().absolute()) for i in images),
        videos=tuple(str(Path(v).expanduser().absolute()) for v in videos),
        source="command line",
        index=0,
    )
    return Prompt(sample, None)


def read_prompts(path: Path) -> list[Prompt]:
    """Every sample of a batch file, or one `ProblemReport` naming each bad sample."""
    from vlaunch_core.data.formats import iter_samples
    from vlaunch_core.data.media import MediaError, MediaRoot

    if not path.is_file():
        raise ProblemReport("cannot read the batch file", [Problem(str(path), "no such file")])
    root = MediaRoot(path.parent)
    prompts: list[Prompt] = []
    problems: list[Problem] = []
    for rec in iter_samples(str(path)):
        where = f"{path} sample {rec.index}"
        sample = rec.sample
        issues = list(rec.problems)
        if sample is not None and sample.turns and sample.turns[-1].role == "user":
            # A question without an answer is what inference is for.
            sample = Sample(
                (*sample.turns, _PLACEHOLDER),
                sample.images,
                sample.videos,
                sample.id,
                sample.system_prompt,
                sample.num_frames,
                sample.source,
                sample.index,
            )
            issues = [p for p in issues if p.kind != "misordered_turns"]
            reference = None
        else:
            reference = sample.turns[-1].text if sample is not None and sample.turns else None
        problems += [Problem(where, p.message) for p in issues]
        if sample is None or issues:
            continue
        for kind, names in (("image", sample.images), ("video", sample.videos)):
            for name in names:
                if not isinstance(name, str):
                    continue  # embedded bytes (JSON batch files have none)
                try:
                    real = root.resolve(name)
                except MediaError as e:
                    problems.append(Problem(where, f"{kind} '{name}': {e.detail}", e.hint))
                    continue
                if not real.is_file():
                    problems.append(Problem(where, f"{kind} '{name}': no such file"))
        prompts.append(Prompt(sample, reference, root.root))
    if problems:
        shown = problems[:SHOWN_PROBLEMS]
        if len(problems) > SHOWN_PROBLEMS:
            shown.append(Problem("", f"... and {len(problems) - SHOWN_PROBLEMS} more"))
        raise ProblemReport(f"the batch file has {len(problems)} problem(s)", shown)
    if not prompts:
        raise ProblemReport("nothing to predict", [Problem(str(path), "the file has no samples")])
    return prompts


class Predictor:
    """A loaded model with the run's encoder: prompts in, generated answers out."""

    def __init__(
        self,
        loaded: LoadedTrained,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> None:
        from trainer.data.dataset import MediaOptions
        from trainer.data.encode import SampleEncoder

        data = loaded.trained.data_spec()
        self.model: Any = loaded.model
        self.family = loaded.family
        self.encoder = SampleEncoder(
            loaded.processor,
            loaded.family,
            max_length=data.max_length,
            overlength=data.overlength,
            system_prompt=data.system_prompt,
        )
        self.media = MediaOptions.from_spec(data, loaded.processor)
        tok = self.encoder.tokenizer
        self.tokenizer = tok
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.stop_ids = sorted({i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None})
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p

    def load_media(self, prompt: Prompt) -> tuple[list[Any], list[np.ndarray]]:
        from vlaunch_core.data.formats import Media
        from vlaunch_core.data.media import MediaInput, MediaRoot, load_image, load_video

        m, s = self.media, prompt.sample
        root = MediaRoot(prompt.media_root) if prompt.media_root is not None else None

        def path(name: Media) -> MediaInput:
            if root is not None:
                return root.locate(name)
            return Path(name) if isinstance(name, str) else name.data

        images = [load_image(path(n), m.max_pixels, m.pad_background) for n in s.images]
        frames = s.num_frames or m.num_frames
        fps = None if s.num_frames else m.fps
        videos = [load_video(path(n), frames, fps, m.max_frames) for n in s.videos]
        return images, videos

    def inputs(self, prompt: Prompt) -> dict[str, torch.Tensor]:
        """The model inputs of one prompt (batch of 1), as training would encode it."""
        fam = self.family
        if prompt.sample.videos and not (fam.supports_video or fam.supports_multi_image):
            raise UserError(
                f"{fam.name} takes neither videos nor several images (video frames)",
                hint="ask about an image, or use a model that takes videos (vlaunch models)",
            )
        images, videos = self.load_media(prompt)
        inputs, _ = self.encoder.encode_prompt(prompt.sample, images, videos)
        return inputs

    def generate(self, prompts: Sequence[Prompt], batch_size: int = 1) -> list[str]:
        """The generated answer of each prompt, in order."""
        out: list[str] = []
        for chunk in _chunks(prompts, max(1, batch_size)):
            out += self._generate([self.inputs(p) for p in chunk])
        return out

    def _generate(self, encoded: list[dict[str, torch.Tensor]]) -> list[str]:
        import torch

        from trainer.evaluate import left_pad
        from trainer.loss import model_inputs

        batch = left_pad(encoded, self.pad_id)
        device = next(self.model.parameters()).device
        inputs = model_inputs(batch, device, _float_dtype(self.model))
        sampling: dict[str, Any] = {"do_sample": False}
        if self.temperature > 0:
            sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                eos_token_id=self.stop_ids,
                pad_token_id=self.pad_id,
                **sampling,
            )
        texts = []
        for ids in out[:, inputs["input_ids"].shape[1] :].tolist():
            cut = next((k for k, t in enumerate(ids) if t in self.stop_ids), len(ids))
            texts.append(self.tokenizer.decode(ids[:cut], skip_special_tokens=True).strip())
        return texts


def device_and_dtype(device: str = "auto", dtype: str = "auto") -> tuple[str, str]:
    """`auto` resolved: a GPU when there is one; bfloat16 on a GPU that has it, else float32."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        on_gpu = device.startswith("cuda")
        dtype = "bfloat16" if on_gpu and torch.cuda.is_bf16_supported() else "float32"
    return device, dtype


def load_predictor(
    trained: Trained,
    *,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> Predictor:
    """A `Predictor` with the weights of `trained` (a run, checkpoint, adapter or model
    folder), on `device` in `dtype` (`auto`: see `device_and_dtype`), seeded for sampling."""
    import torch

    from trainer.trained import load_trained

    device, dtype = device_and_dtype(device, dtype)
    torch.manual_seed(seed)
    return Predictor(
        load_trained(trained, dtype=dtype, device=device),
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
    )


def _float_dtype(model: Any) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _chunks(items: Sequence[Prompt], n: int) -> Iterator[Sequence[Prompt]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
