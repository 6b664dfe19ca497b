"""``pixelrl pretrain slots``: pretrain a Slot Attention encoder on generated images of random objects for the
``builtin/shapes-*`` benchmark. Parsing only; the work is in :mod:`pixelrl.train.pretrain`."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from typing import Optional

from pixelrl.errors import ConfigError
from pixelrl.train.pretrain import PretrainConfig

USAGE = """usage: pixelrl pretrain slots [options]

  slots   pretrain a Slot Attention encoder (6 slots x 64, 7 iterations) by reconstruction on generated images of
          random objects, for PPO's --agent.encoder slots on the builtin/shapes-* envs:
          pixelrl pretrain slots --env builtin/shapes-object-goal --images 100_000 --out DIR
          (run the same command again to continue from its latest checkpoint)"""


@dataclass(frozen=True)
class _Slots(PretrainConfig):
    """Pretrain a Slot Attention autoencoder on generated images of random objects and write the encoder to --out
    (slots.json + encoder.safetensors, for ``pixelrl train --agent ppo --agent.encoder slots --agent.slot-encoder
    DIR``), with checkpoints under DIR/checkpoints (the same command continues from the latest). See
    docs/envs/shapes.md."""

    out: Optional[str] = None
    """Folder to write the encoder, checkpoints and metrics to. Required."""


def _slots(args: _Slots) -> int:
    from pixelrl.train.pretrain import pretrain_slots
    from pixelrl.utils.dataclass_io import from_dict, to_dict

    if args.out is None:
        raise ConfigError("pixelrl pretrain slots needs --out DIR (the folder to write the encoder to)")
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    cfg = from_dict(PretrainConfig, {k: v for k, v in to_dict(args).items() if k in names}, where="pretrain options")
    summary = pretrain_slots(cfg, args.out)
    print(json.dumps(summary))
    return 0


def cmd_pretrain(argv: list[str]) -> int:
    from pixelrl.cli.main import _unchecked
    from pixelrl.cli.subcommands import run_subcommand

    return run_subcommand(argv, "pretrain", USAGE, {"slots": (_unchecked(_Slots), _slots)})


if __name__ == "__main__":
    sys.exit(cmd_pretrain(sys.argv[1:]))
