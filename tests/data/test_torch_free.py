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
        "heavy = [m for m in ('torch', 'transformers', 'ray', 'deepspeed') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
