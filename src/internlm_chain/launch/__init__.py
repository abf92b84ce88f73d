"""How a Job starts (local process, torchrun, Slurm). Where it runs is the runtime's business."""
