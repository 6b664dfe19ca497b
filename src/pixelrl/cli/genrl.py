"""``pixelrl genrl SUB``: RL fine-tuning of image generators (``train``) and, when installed, the commands that
build the local generator, consistency model and verifier (:mod:`pixelrl.cli.genrl_models`). Parsing only; the
work is in :mod:`pixelrl.genrl`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from pixelrl.genrl.config import GenRLConfig

USAGE_TRAIN = """  train   RL fine-tuning of a diffusers generator (DDPO, RLCM, PRDP, GRPO, Parrot, preference):
          pixelrl genrl train --model PATH --reward jpeg-compressibility --prompts FILE --algo ddpo --out DIR
          (the same command again continues DIR from its latest checkpoint; docs/genrl.md)"""


@dataclass(frozen=True)
class _Train(GenRLConfig):
    """RL fine-tuning of a diffusers generator folder on a reward: sample denoising trajectories, reward the images,
    update by the chosen algorithm. Writes the run to --out (config.json, metrics.jsonl, train.csv, checkpoints/,
    and generator/ at the end); the same command again continues it. See docs/genrl.md."""


def _train(args: _Train) -> int:
    from pixelrl.genrl.trainer import train
    from pixelrl.utils.dataclass_io import from_dict, to_dict

    cfg = from_dict(GenRLConfig, to_dict(args), where="genrl train options")
    summary = train(cfg)
    summary.pop("config", None)
    print(json.dumps(summary))
    return 0


def _table() -> tuple[str, dict]:
    from pixelrl.cli.main import _unchecked

    table: dict = {"train": (_unchecked(_Train), _train)}
    lines = [USAGE_TRAIN]
    try:
        import pixelrl.cli.genrl_models as genrl_models
    except ModuleNotFoundError as e:
        if e.name != "pixelrl.cli.genrl_models":
            raise
    else:
        table.update(genrl_models.COMMANDS)
        lines.append(genrl_models.USAGE_LINES.rstrip("\n"))
    usage = f"usage: pixelrl genrl {{{','.join(table)}}} [options]\n\n" + "\n".join(lines) + \
        "\n\n`pixelrl genrl <command> --help` lists every option with its documentation."
    return usage, table


def cmd_genrl(argv: list[str]) -> int:
    from pixelrl.cli.subcommands import run_subcommand

    usage, table = _table()
    return run_subcommand(argv, "genrl", usage, table)


if __name__ == "__main__":
    sys.exit(cmd_genrl(sys.argv[1:]))
