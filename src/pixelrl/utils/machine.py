"""What a benchmark result names as its machine."""

from __future__ import annotations

import os
import platform

__all__ = ["machine_description"]


def machine_description() -> str:
    """``'<CPU model>, <n> cpus, torch <version>, <n> threads'`` (the CPU model from /proc/cpuinfo when readable)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cpus, torch {torch.__version__}, {torch.get_num_threads()} threads"
