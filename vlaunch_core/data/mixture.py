"""Mixtures: dataset names joined with `+`, `name*N` repeating one N times (VILA's syntax).

`mixture_problems(spec)` runs during job-spec validation: it needs the registry files but
not the data files, so `vlaunch plan` works before the data exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from vlaunch_core.data.registry import Dataset, known_datasets
from vlaunch_core.errors import Problem, ProblemReport, did_you_mean

if TYPE_CHECKING:
    from vlaunch_core.spec import JobSpec

MAX_REPEAT = 10_000
"""The largest `name*N`: every repeat is one more pass over the dataset in each epoch's
permutation (VILA's mixtures repeat a dataset a few times)."""
_TERM = re.compile(r"^(?P<name>[^*+\s]+)(?:\s*\*\s*(?P<n>\S+))?$")


@dataclass(frozen=True)
class Term:
    name: str
    repeat: int = 1


@dataclass(frozen=True)
class MixtureItem:
    dataset: Dataset
    repeat: int


def parse_mixture(text: str) -> tuple[list[Term], list[str]]:
    """The terms of `A+B*2`, and a message for each malformed term."""
    terms: list[Term] = []
    errors: list[str] = []
    for i, raw in enumerate(text.split("+")):
        part = raw.strip()
        if not part:
            errors.append(f"empty name at position {i + 1} of '{text}'")
            continue
        m = _TERM.match(part)
        if m is None:
            errors.append(f"'{part}' is not a dataset name or name*N")
            continue
        n = m.group("n")
        if n is None:
            terms.append(Term(m.group("name")))
        elif (
            n.isascii()
            and n.isdigit()
            and 1 <= len(n.lstrip("0") or "0") <= 5
            and (1 <= int(n) <= MAX_REPEAT)
        ):
            terms.append(Term(m.group("name"), int(n)))
        else:
            errors.append(
                f"'{part}': the repeat count after '*' must be a whole number from 1 to "
                f"{MAX_REPEAT}"
            )
    return terms, errors


def _problems_for(key: str, text: str, known: dict[str, Dataset]) -> list[Problem]:
    terms, errors = parse_mixture(text)
    out = [
        Problem(key, e, "write names joined with '+', e.g. SampleQA+SampleVideo*2") for e in errors
    ]
    listing = ", ".join(sorted(known)) or "none"
    for t in terms:
        if t.name not in known:
            out.append(
                Problem(
                    key,
                    f"unknown dataset '{t.name}'.{did_you_mean(t.name, known)}",
                    f"known datasets: {listing} (define more in data.registry files or "
                    "data.datasets)",
                )
            )
    return out


def mixture_problems(spec: JobSpec) -> list[Problem]:
    """Problems of `data.mixture` and `data.eval_mixture` (the data files need not exist)."""
    known, problems = known_datasets(spec)
    if spec.data.mixture.strip():
        problems += _problems_for("data.mixture", spec.data.mixture, known)
    if spec.data.eval_mixture is not None:
        problems += _problems_for("data.eval_mixture", spec.data.eval_mixture, known)
    return problems


def resolve_mixture(spec: JobSpec, split: Literal["train", "eval"] = "train") -> list[MixtureItem]:
    """The datasets of the training (or eval) mixture with their repeat counts."""
    key = "data.mixture" if split == "train" else "data.eval_mixture"
    text = spec.data.mixture if split == "train" else spec.data.eval_mixture
    if text is None:
        raise ProblemReport("no eval data", [Problem(key, "not set", "set data.eval_mixture")])
    known, problems = known_datasets(spec)
    problems += _problems_for(key, text, known)
    if problems:
        raise ProblemReport(title=f"cannot resolve {key}", problems=problems)
    terms, _ = parse_mixture(text)
    return [MixtureItem(known[t.name], t.repeat) for t in terms]


def resolve_registry_mixture(registry: list[str], mixture: str) -> list[MixtureItem]:
    """`--registry FILE --mixture A+B` without a job spec."""
    from vlaunch_core.spec import DataSpec, JobSpec, ModelSpec

    spec = JobSpec(
        name="check",
        model=ModelSpec(name_or_path="none"),
        data=DataSpec(mixture=mixture, registry=[str(r) for r in registry]),
    )
    return resolve_mixture(spec, "train")


def mixture_size_at_least(spec: JobSpec, limit: int) -> int | None:
    """Records in the training mixture (repeats counted), counted only until `limit` is
    reached (bounded work on any dataset size: JSON records up to the limit, Parquet
    footers, Arrow batch headers, tar member headers or a wids index); None when the mixture
    does not resolve, a dataset is a hub id, or its data is not on this machine (data on a
    cluster's filesystem)."""
    from vlaunch_core.data.sources import SourceError, open_source, source_kind

    try:
        items = resolve_mixture(spec, "train")
    except ProblemReport:
        return None
    total = 0
    for item in items:
        if source_kind(item.dataset.entry) == "hf":
            return None
        needed = -(-(limit - total) // item.repeat)  # records of this dataset still to count
        try:
            count = open_source(item.dataset).count_at_least(needed)
        except (SourceError, OSError, UnicodeDecodeError):
            return None
        total += count * item.repeat
        if total >= limit:
            return total
    return total
