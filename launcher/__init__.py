"""vlaunch launcher: the job spec, the planner and the backends (local, Slurm, Kubernetes).

Nothing in this package imports torch, transformers or ray at module level: the CLI must start
fast and run on a login node that has no training stack installed.
"""

__version__ = "0.1.0"
