"""The torch process group of Ray Train runs (trainer/ray_backend.py): the driver and Ray
Train's controller never import torch, and the configuration says what Ray's own
`TorchConfig` says. That the process group works is shown by every Ray run of the suite
(tests/e2e/test_ray_runs.py: two DDP workers train and resume)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from ray.train.torch.config import TorchConfig, _TorchBackend

from trainer.ray_backend import TorchProcessGroup, _TorchProcessGroupBackend


def test_the_controller_side_never_imports_torch() -> None:
    # What the driver builds and Ray Train's controller unpickles and calls, in a fresh
    # interpreter: the trainer's class, the config and its backend's class, the scaling
    # policy of a run on its own cluster (trainer/ray_trainer.py).
    code = textwrap.dedent(
        """
        import sys
        import ray.cloudpickle as pickle
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
        import trainer.ray_host
        from ray.train.v2.api.config import ScalingConfig
        from trainer.ray_backend import TorchProcessGroup
        from trainer.ray_trainer import FixedWithoutAutoscaler

        config = pickle.loads(pickle.dumps(TorchProcessGroup(backend="gloo", timeout_s=60)))
        pickle.loads(pickle.dumps(FixedWithoutAutoscaler(ScalingConfig(num_workers=2))))
        backend = config.backend_cls()
        print(config.to_dict(), config.framework.value, config.train_func_context.__name__)
        print("torch imported:", "torch" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "'backend': 'gloo'" in out and " torch " in out
    assert "torch imported: False" in out


def test_the_config_says_what_torch_config_says() -> None:
    for backend in ("gloo", "nccl"):
        ours = TorchProcessGroup(backend=backend, timeout_s=1234)
        assert ours.to_dict() == TorchConfig(backend=backend, timeout_s=1234).to_dict()
        assert ours.framework == TorchConfig().framework
    # the GPUs of a node are visible to all its workers, as with TorchTrainer
    assert (
        _TorchProcessGroupBackend.share_cuda_visible_devices
        == _TorchBackend.share_cuda_visible_devices
    )
