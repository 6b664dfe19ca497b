"""Suite-wide settings: tests use tiny networks, for which one torch thread is faster than several (OpenMP
synchronisation costs more than the work), and much faster when the machine is busy."""

import torch

torch.set_num_threads(1)
