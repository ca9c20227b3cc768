"""The Slurm backend.

- `backend.py`: `SlurmBackend`, the launch pipeline's Slurm backend (render, submit, status,
  logs, cancel); the spec's `slurm:` section is `vlaunch_core/slurm_options.py`;
- `render.py`: `build_request(spec, plan) -> SlurmRequest`, the sbatch script and the files it
  needs (what `--dry-run` prints), and the `slurm/srun_*.sh` entry points;
- `submit.py`: checks before submitting (sbatch on PATH, the partition), `submit(request)`;
- `control.py`: status (Slurm's states as `JobState`), logs and cancel of a job;
- `variants.py`: VILA's `srun_*` names as spec overrides.
"""
