"""The torch-free data modules stay importable without torch and transformers."""

from __future__ import annotations

import subprocess
import sys


def test_torch_free_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import trainer.data.formats, trainer.data.registry, trainer.data.mixture\n"
        "import trainer.data.media, trainer.data.check, trainer.data.synth\n"
        "import trainer.data.sampler, trainer.data.jsonstream, launcher.commands.data\n"
        "heavy = [m for m in ('torch', 'transformers', 'ray', 'deepspeed') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
