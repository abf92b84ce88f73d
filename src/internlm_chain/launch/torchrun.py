"""torchrun: a `distributed` job becomes `python -m torch.distributed.run … <script or -m module> …`.

Everything else about starting it (process group, logs, signals) is the local launcher's.
"""

from __future__ import annotations

from internlm_chain.chain.job import Job
from internlm_chain.launch.base import split_interpreter, torchrun_args
from internlm_chain.launch.local import LocalLauncher


class TorchrunLauncher(LocalLauncher):
    kind = "torchrun"

    def render(self, job: Job) -> Job:
        if not job.distributed:
            return job
        python, rest = split_interpreter(job)
        port = self.master_port(job)
        args = torchrun_args(self.settings, port, rdzv_id=f"ichain-{job.stage}-{port}")
        return job.model_copy(update={"argv": [*python, *args, *rest]})
