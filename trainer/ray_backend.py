"""Ray Train's torch process group, with torch imported by the workers only.

`TorchTrainer` takes a `TorchConfig`, whose module imports torch at the top. Ray Train's
controller unpickles that config when it starts, so the controller, a process that never
runs a tensor, imported torch first: about 2.5 s of one core on this machine, on the path
to the first step of every run (`vlaunch local`, `vlaunch run`), and over 400 MiB of its
resident memory. `TorchProcessGroup` is the same configuration for `DataParallelTrainer`
(which `TorchTrainer` extends with nothing else vlaunch uses): what runs on the workers is
Ray's own code (`ray.train.torch.config`: the distributed environment variables, the
process group, the CUDA device, the shutdown), called through module-level functions here,
and the controller only sends those calls, as Ray's `_TorchBackend` does (minus TPU
slices, which vlaunch does not plan).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray
from ray.train.backend import Backend, BackendConfig

logger = logging.getLogger(__name__)


@dataclass
class TorchProcessGroup(BackendConfig):
    """`TorchConfig(backend, timeout_s)` with `init_method="env"`."""

    backend: str = "gloo"
    timeout_s: int = 1800

    @property
    def backend_cls(self) -> type[Backend]:
        return _TorchProcessGroupBackend

    @property
    def train_func_context(self) -> type[_DeviceContext]:
        return _DeviceContext

    @property
    def framework(self) -> Any:
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TORCH

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "init_method": "env", "timeout_s": self.timeout_s}


class _TorchProcessGroupBackend(Backend):
    # every worker sees the GPUs of all workers on its node, as with Ray's torch backend
    share_cuda_visible_devices: bool = True

    def on_start(self, worker_group: Any, backend_config: BackendConfig) -> None:
        from ray.train._internal.utils import get_address_and_port

        assert isinstance(backend_config, TorchProcessGroup)

        addr, port = worker_group.execute_single(0, get_address_and_port)
        worker_group.execute(_set_env, addr=addr, port=port)
        ray.get(
            [
                worker_group.execute_single_async(
                    rank,
                    _init_process_group,
                    backend=backend_config.backend,
                    world_rank=rank,
                    world_size=len(worker_group),
                    timeout_s=backend_config.timeout_s,
                )
                for rank in range(len(worker_group))
            ]
        )

    def on_shutdown(self, worker_group: Any, backend_config: BackendConfig) -> None:
        from ray.exceptions import GetTimeoutError
        from ray.train.constants import (
            DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
            TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
        )

        futures = worker_group.execute_async(_shutdown, destroy=len(worker_group) > 1)
        timeout = float(
            os.environ.get(
                TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
                DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
            )
        )
        try:
            ray.get(futures, timeout=timeout)
        except GetTimeoutError:
            logger.warning("torch process group shutdown timed out after %.0f seconds", timeout)


# ------------------------------------------------------------- run on each worker


def _set_env(addr: str, port: int) -> None:
    """MASTER_ADDR/PORT, then RANK, WORLD_SIZE, LOCAL_RANK, ... as Ray's backend sets them."""
    from ray.train.torch.config import _set_torch_distributed_env_vars

    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)
    _set_torch_distributed_env_vars()


def _init_process_group(backend: str, world_rank: int, world_size: int, timeout_s: int) -> None:
    from ray.train.torch.config import _setup_torch_process_group

    _setup_torch_process_group(
        backend=backend,
        world_rank=world_rank,
        world_size=world_size,
        init_method="env://",
        timeout_s=timeout_s,
    )


def _shutdown(destroy: bool) -> None:
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(destroy_process_group=destroy)


class _DeviceContext:
    """Around the train function: the worker's CUDA device is the current one (Ray's
    `TorchConfigContextManager`)."""

    def __enter__(self) -> None:
        from ray.train.torch.config import TorchConfigContextManager

        TorchConfigContextManager().__enter__()

    def __exit__(self, *exc: object) -> None:
        return None
