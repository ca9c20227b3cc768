"""The torch-free data modules stay importable without torch and transformers."""

from __future__ import annotations

import subprocess
import sys


def test_torch_free_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import vlaunch_core.data.formats, vlaunch_core.data.registry, vlaunch_core.data.mixture\n"
        "import vlaunch_core.data.media, vlaunch_core.data.check, vlaunch_core.data.synth\n"
        "import vlaunch_core.data.sampler, vlaunch_core.data.jsonstream, launcher.commands.data\n"
        "import vlaunch_core.data.order, vlaunch_core.data.sources.parquet\n"
        "import vlaunch_core.data.sources.arrow, vlaunch_core.data.sources.tar, trainer.data.hub\n"
        "heavy = [m for m in ('torch', 'transformers', 'ray', 'deepspeed', 'datasets')\n"
        "         if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_data_check_of_sharded_sources_runs_without_torch(tmp_path: object) -> None:
    """`vlaunch data check` on Parquet and tar shards (a login node has no torch)."""
    from pathlib import Path

    from vlaunch_core.data.synth import SynthSizes, synthesize

    folder = Path(str(tmp_path))
    sizes = SynthSizes(train=8, eval=2, video_train=1, video_eval=1)
    synthesize(folder, sizes, formats=("parquet", "webdataset"))
    targets = [
        str(folder / "parquet" / "train.parquet"),
        str(folder / "shards" / "train-{0000..0000}.tar"),
    ]
    code = (
        "import sys\n"
        "from launcher.cli import main\n"
        f"codes = [main(['data', 'check', t, '--json', '--decode']) for t in {targets!r}]\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "print('@@', codes, ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "@@ [0, 0]"
