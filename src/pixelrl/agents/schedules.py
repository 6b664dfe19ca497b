"""Scalar schedules written as strings in configs, evaluated on agent steps.

Accepted forms (DrQ-v2's syntax):
  * a number, e.g. ``"0.2"`` or ``0.2``: constant;
  * ``"linear(init,final,duration)"``: linear from ``init`` at step 0 to ``final`` at ``duration``, then flat;
  * ``"step_linear(init,final1,duration1,final2,duration2)"``: linear to ``final1`` over ``duration1``, then
    linear to ``final2`` over the next ``duration2`` steps.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pixelrl.errors import ConfigError

__all__ = ["parse_schedule"]

_NUM = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"


def parse_schedule(spec: str | float | int) -> Callable[[int], float]:
    """Parse a schedule spec once; the returned function maps an agent step to a float."""
    if isinstance(spec, (int, float)):
        value = float(spec)
        return lambda step: value
    s = str(spec).strip()
    try:
        value = float(s)
        return lambda step: value
    except ValueError:
        pass
    m = re.fullmatch(rf"linear\({_NUM},{_NUM},{_NUM}\)", s)
    if m:
        init, final, duration = (float(g) for g in m.groups())
        if duration <= 0:
            raise ConfigError(f"schedule {s!r}: duration must be > 0")

        def linear(step: int) -> float:
            mix = min(max(step / duration, 0.0), 1.0)
            return (1.0 - mix) * init + mix * final

        return linear
    m = re.fullmatch(rf"step_linear\({_NUM},{_NUM},{_NUM},{_NUM},{_NUM}\)", s)
    if m:
        init, final1, dur1, final2, dur2 = (float(g) for g in m.groups())
        if dur1 <= 0 or dur2 <= 0:
            raise ConfigError(f"schedule {s!r}: durations must be > 0")

        def step_linear(step: int) -> float:
            if step <= dur1:
                mix = min(max(step / dur1, 0.0), 1.0)
                return (1.0 - mix) * init + mix * final1
            mix = min(max((step - dur1) / dur2, 0.0), 1.0)
            return (1.0 - mix) * final1 + mix * final2

        return step_linear
    raise ConfigError(
        f"cannot parse schedule {spec!r}; use a number (e.g. 0.2), 'linear(init,final,duration)' or "
        "'step_linear(init,final1,duration1,final2,duration2)' with durations in agent steps"
    )
