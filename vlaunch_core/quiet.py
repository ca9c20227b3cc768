"""Quiet by default: a successful run prints vlaunch's lines, not its dependencies' noise.

Every process that imports the training stack calls `quiet_dependencies()` first: the CLI
(`launcher/cli.py`, before any command runs) and every Ray Train worker
(`trainer/ray_host.py`). `vlaunch -v` sets `VLAUNCH_VERBOSE=1`, which the workers inherit,
and then nothing is filtered.

What is ours is fixed where it is caused, not here: bitsandbytes is imported only by QLoRA
(`trainer/models/quantization.py`); Ray Train's preemption watcher is off and every Ray
process knows its own cluster's address (`trainer/ray_cluster.py`), so no Ray actor logs
errors on a successful run. What is filtered here is harmless and not ours:

- DeepSpeed's `Setting accelerator to CPU. If you have GPU or other accelerator, we were
  unable to detect it.`: transformers imports DeepSpeed, which probes the accelerator at
  import time and says this on every machine without CUDA;
- `FutureWarning` and `DeprecationWarning` raised inside transformers (deprecations of its
  own arguments, addressed to library authors);
- progress bars of huggingface_hub and transformers (loading weights, writing shards) where
  nobody watches them: when stderr is not a terminal, and always in Ray workers (their
  output is collected and interleaved by Ray).

Only the standard library is used: nothing here imports the libraries it quiets.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

#: Set to 1 by `vlaunch -v`; inherited by the processes the CLI starts (Ray workers).
VERBOSE_ENV = "VLAUNCH_VERBOSE"

#: Harmless lines by logger name: (logger, start of the message).
HARMLESS_LOG_LINES: tuple[tuple[str, str], ...] = (("DeepSpeed", "Setting accelerator to CPU"),)

#: Modules whose deprecation warnings are filtered (regular expressions on the module name).
DEPRECATION_SOURCES = (r"transformers(\..*)?",)


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def verbose() -> bool:
    """Whether `vlaunch -v` asked to see everything (here or in the parent process)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_dependencies(*, progress_bars: bool | None = None) -> None:
    """Filter the harmless noise of dependencies in this process (not with `-v`).

    `progress_bars`: whether dependencies may draw progress bars (default: when stderr is a
    terminal). Call before the training stack is imported; calling again is harmless.
    """
    if verbose():
        return
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, prefix in HARMLESS_LOG_LINES:
        by_logger[name] = (*by_logger.get(name, ()), prefix)
    for name, prefixes in by_logger.items():
        # A filter on the logger itself survives the library adding its own handlers later.
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in log.filters):
            log.addFilter(_DropMessages(prefixes))
    for module in DEPRECATION_SOURCES:
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category, module=module)
    if progress_bars is None:
        progress_bars = sys.stderr.isatty()
    if not progress_bars:
        # Read by huggingface_hub, and by transformers for its own bars, at import time.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
