"""vlaunch launcher: the CLI and the backends (local, Slurm, Kubernetes).

Builds on the torch-free `vlaunch_core`. Nothing in this package imports torch, transformers
or ray at module level: the CLI must start fast and run on a login node that has no training
stack installed; commands that train or load models call into `trainer` when they run.
"""

__version__ = "0.1.0"
