"""Render the `finetune-job` chart through the Helm engine (PyPI `helm-python-sdk`: Helm v4's Go
SDK behind a C ABI, no `helm` binary).

The chart is the single source of truth for the manifests: `vlaunch k8s --dry-run` prints
`Rendered.text`, and submission creates `Rendered.objects`, both straight from this render.
The text shows Secrets with their data redacted (the run's Ray token); the objects hold it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vlaunch_core.errors import UserError

logger = logging.getLogger(__name__)

CHART = "finetune-job"
#: Release name given to the Helm engine. Object names come from the `runName` value, so it
#: appears in no manifest.
RELEASE = "vlaunch"
#: Creation order (Helm's install order for these kinds); other kinds (RayJob) come last.
KIND_ORDER = ("Secret", "ConfigMap", "PersistentVolumeClaim", "Service", "Job")
#: What `Rendered.text` shows instead of each value of a Secret's data.
REDACTED = "<redacted>"


def chart_dir() -> Path:
    """The chart: inside the installed package (wheel) or at the top of the checkout."""
    from launcher.assets import asset_dir

    return asset_dir("charts") / CHART


@dataclass(frozen=True)
class Manifest:
    """One rendered template that holds an object."""

    source: str
    text: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def shown_text(self) -> str:
        """The manifest as printed: a Secret's data and stringData values are redacted (not
        valid base64, so applying the printed Secret fails instead of using a known token)."""
        text = self.text
        if self.kind == "Secret":
            for field in ("data", "stringData"):
                for value in (self.obj.get(field) or {}).values():
                    if value:
                        text = text.replace(str(value), REDACTED)
        return text


@dataclass(frozen=True)
class Rendered:
    """The chart rendered for one set of values."""

    manifests: tuple[Manifest, ...]
    notes: str

    @property
    def objects(self) -> list[dict[str, Any]]:
        return [m.obj for m in self.manifests]

    @property
    def text(self) -> str:
        """A YAML stream, like `helm template`: `---`, `# Source: <template>`, the manifest;
        Secret data redacted (`Manifest.shown_text`)."""
        return "".join(
            f"---\n# Source: {m.source}\n{m.shown_text.strip()}\n" for m in self.manifests
        )

    @property
    def run_name(self) -> str:
        """The normalised name the chart gave the run's objects."""
        return self.workload.name

    @property
    def workload(self) -> Manifest:
        """The Job (operator-free mode) or the RayJob (KubeRay mode)."""
        for m in self.manifests:
            if m.kind in ("Job", "RayJob"):
                return m
        raise AssertionError("the chart rendered neither a Job nor a RayJob")


def render(values: dict[str, Any], namespace: str, chart: Path | None = None) -> Rendered:
    """Render the chart with `values` into `namespace`; schema violations are user errors."""
    import helm_python

    with helm_python.Chart.load(str(chart or chart_dir())) as loaded:
        try:
            out = loaded.render(values, name=RELEASE, namespace=namespace)
        except helm_python.HelmValuesError as e:
            raise UserError(
                f"the {CHART} chart rejects these values: {schema_message(e)}",
                hint="fix the k8s: section of the job spec (see docs/kubernetes.md)",
            ) from None
    return parse(out)


def schema_message(error: Exception) -> str:
    """Helm's schema error without its preamble: one `at '/key': reason` per line."""
    lines = [ln.strip() for ln in str(error).splitlines()]
    found = [ln.lstrip("- ") for ln in lines if ln.startswith("- ")]
    return "; ".join(found) if found else str(error).strip()


def parse(rendered: dict[str, str]) -> Rendered:
    """Templates as returned by the engine (path -> text) into ordered manifests."""
    manifests: list[Manifest] = []
    notes = ""
    for source, text in rendered.items():
        if source.endswith("NOTES.txt"):
            notes = text
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        if not docs:
            continue
        assert len(docs) == 1, f"{source}: one object per template, got {len(docs)}"
        manifests.append(Manifest(source, text, docs[0]))

    def order(m: Manifest) -> tuple[int, str]:
        kind = m.kind
        return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), m.source)

    return Rendered(tuple(sorted(manifests, key=order)), notes)
