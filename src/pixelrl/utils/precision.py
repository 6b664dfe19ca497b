"""Choosing the training precision for the machine at hand: ``precision='auto'``.

bf16 autocast is only fast where the hardware computes in bf16 natively: CPUs with AVX512_BF16 or AMX, NVIDIA GPUs
from Ampere on. Elsewhere torch emulates it, and emulation is slow: on an AVX2-only AMD EPYC the cpu-fast DrQ-v2
update takes 1.09 s in bf16 against 0.11 s in fp32. Even with native support bf16 is not always faster (the casts
can cost more than the matmuls save: on one Intel Xeon the IQL update and on an H100 the DrQ-v2 update were slower
in bf16). So ``auto`` means: fp32, unless the device has native bf16 *and* a short timing of the agent's own
forward and backward pass on a synthetic batch shows bf16 clearly faster (by :data:`BF16_MIN_SPEEDUP`).

The choice and the measured times are returned as a sentence; the trainer prints it and records it in the run's
``config.json`` (``decisions``), and writes the chosen precision into the agent's config there, so a resumed run
keeps it without measuring again.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable

import torch

from pixelrl.errors import ConfigError

__all__ = ["PRECISIONS", "BF16_MIN_SPEEDUP", "MIN_PROBE_S", "ENV_VAR", "cpu_flags", "native_bf16", "choose_precision"]

PRECISIONS = ("auto", "fp32", "bf16")
"""Accepted values of an agent config's ``precision`` field."""

BF16_MIN_SPEEDUP = 1.15
"""``auto`` picks bf16 only when the probe runs at least this much faster in bf16 than in fp32: a smaller gain is
within timing noise and not worth bf16's rounding."""

MIN_PROBE_S = 0.002
"""A probe pass faster than this in fp32 means networks too small for bf16 to pay off (and a timing too short to
trust): ``auto`` keeps fp32 without timing bf16."""

ENV_VAR = "PIXELRL_PRECISION"
"""Set to ``fp32`` or ``bf16``, it is what ``auto`` resolves to in every process that inherits it (a cluster's or a
test suite's fixed choice); explicit ``fp32`` / ``bf16`` configs are unaffected."""

_CACHE: dict[tuple, tuple[str, str]] = {}


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo's first processor (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and what that was decided from."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        if major >= 8:
            return True, f"{name} (compute capability {major}.{minor}) has bf16 tensor cores"
        return False, f"{name} (compute capability {major}.{minor}) has no native bf16 (needs 8.0+)"
    if device.type != "cpu":
        return False, f"no bf16 check for device type {device.type!r}"
    flags = cpu_flags() & {"avx512_bf16", "amx_bf16"}
    isa = torch.backends.cpu.get_cpu_capability()
    if not flags:
        return False, f"the CPU has no avx512_bf16 / amx_bf16 instructions (torch kernels: {isa})"
    if not isa.upper().startswith("AVX512"):
        # e.g. ATEN_CPU_CAPABILITY=avx2: torch's kernels do not use the bf16 instructions the CPU has
        return False, f"the CPU has {'/'.join(sorted(flags))} but torch's kernels run at {isa}"
    return True, f"the CPU has {'/'.join(sorted(flags))} (torch kernels: {isa})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def choose_precision(device: torch.device | str, probe: Callable[[bool], None], *, key: tuple = (),
                     reps: int = 3) -> tuple[str, str]:
    """``('fp32' | 'bf16', reason)`` for ``device``.

    ``probe(bf16)`` runs one representative forward + backward pass, under bf16 autocast when ``bf16`` is true;
    it is timed only when the device has native bf16 (one warm-up call, then ``reps`` alternating calls of each
    precision, medians compared). The probe runs inside ``torch.random.fork_rng``, so it leaves every random
    stream as it found it. Decisions are cached per ``(device, key)`` for the process: pass the shapes that
    determine the cost (network widths, batch) as ``key``.
    """
    device = torch.device(device)
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced:
        if forced not in ("fp32", "bf16"):
            raise ConfigError(f"{ENV_VAR}={forced!r}: must be 'fp32' or 'bf16' (or unset to decide per machine)")
        return forced, f"{forced}: set by the environment variable {ENV_VAR}"
    ok, why = native_bf16(device)
    if not ok:
        return "fp32", f"fp32: {why}"
    cache_key = (str(device), torch.get_num_threads(), *key)
    if cache_key in _CACHE:
        return _CACHE[cache_key]
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        _time(lambda: probe(False), device)
        t32 = [_time(lambda: probe(False), device)]
        if t32[0] < MIN_PROBE_S:
            result = ("fp32", f"fp32: {why}, but a probe update takes {t32[0] * 1e3:.2f} ms in fp32: networks this "
                              "small gain nothing from bf16")
            _CACHE[cache_key] = result
            return result
        t16 = [_time(lambda: probe(True), device)]  # includes bf16's own warm-up (weight casts, kernel choice)
        if t16[0] < 3 * t32[0]:  # a bf16 pass 3x slower than fp32 even cold: no point measuring it again
            for _ in range(reps):
                t32.append(_time(lambda: probe(False), device))
                t16.append(_time(lambda: probe(True), device))
            t32, t16 = t32[1:], t16[1:]
    f32, b16 = statistics.median(t32), statistics.median(t16)
    speedup = f32 / b16
    choice = "bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32"
    verdict = "faster" if choice == "bf16" else f"not {BF16_MIN_SPEEDUP:.2f}x faster"
    reason = (f"{choice}: {why}, and a probe update took {b16 * 1e3:.1f} ms in bf16 vs {f32 * 1e3:.1f} ms in fp32 "
              f"({speedup:.2f}x, {verdict})")
    _CACHE[cache_key] = (choice, reason)
    return choice, reason


def probe_update_fn(modules: list[torch.nn.Module], loss_fn: Callable[[], torch.Tensor],
                    device: torch.device) -> Callable[[bool], None]:
    """A ``probe(bf16)`` for :func:`choose_precision`: ``loss_fn()`` under the precision's autocast, then the
    gradient of it with respect to the parameters of ``modules`` (``torch.autograd.grad``: no ``.grad`` written)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]

    def probe(bf16: bool) -> None:
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = loss_fn()
        if params:
            torch.autograd.grad(loss, params, allow_unused=True)

    return probe

