"""Mistakes that only show once training starts, without Ray (`python -m trainer.run`): one
message, exit 2, no traceback, status.json says failed; nothing retried."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hostile.conftest import spec_data
from tests.hostile.helpers import TRACEBACK_MARKERS, write_spec
from tests.trainer.helpers import explain, run_trainer

pytestmark = pytest.mark.timeout(300, func_only=True)


@pytest.mark.parametrize("overlength", ["truncate_text"])
def test_every_sample_over_max_length_is_one_user_error(job: Path, overlength: str) -> None:
    """A UserError inside DataLoader worker tracebacks, retried 4 times under Ray."""
    data = spec_data(job)
    data["data"].update({"max_length": 16, "overlength": overlength, "num_workers": 1})
    write_spec(job, data)
    proc = run_trainer(job)
    assert proc.returncode == 2, explain(proc)
    for marker in (*TRACEBACK_MARKERS, "DataLoader worker"):
        assert marker not in proc.stderr, explain(proc)
    assert proc.stderr.count("error:") == 1, explain(proc)
    assert "data.max_length" in proc.stderr
    status = json.loads((job.parent / "runs" / "job" / "status.json").read_text())
    assert status["state"] == "failed" and status["step"] == 0, status
