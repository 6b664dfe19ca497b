"""Scale-out on Ray core actors (``pip install 'pixelrl[ray]'``, docs/distributed.md): env workers as actors, policy
inference batched, the learner (agent, replay, evaluation, checkpoints) in the driver process. It drives the same
trainers' pieces and adds no algorithm: ``pixelrl train ... --workers N`` picks :func:`trainer_class`'s trainer, which
writes the same run folder and resumes with ``pixelrl resume``.

* :mod:`~pixelrl.distributed.worker` -- the env worker (K envs of the project's vector env) and batched acting;
* :mod:`~pixelrl.distributed.pool` -- Ray start-up, the workers as actors, restart of a dead worker;
* :mod:`~pixelrl.distributed.vector` -- the workers as one vector env (PPO's synchronous rollouts);
* :mod:`~pixelrl.distributed.onpolicy` -- PPO on Ray: synchronous rollouts, or bounded staleness (the update in a
  learner thread while the next rollouts are collected);
* :mod:`~pixelrl.distributed.ddp` -- data-parallel learners (``--learners``, torch.distributed): PPO over shards of
  the rollout (DDP), DrQ-v2 / SAC over one replay batch each;
* :mod:`~pixelrl.distributed.offpolicy` -- the off-policy agents (DrQ-v2 family, SAC) on Ray: chunks, weight
  broadcast, version stamps, bounded staleness.
"""

from __future__ import annotations

__all__ = ["trainer_class"]


def trainer_class(cfg) -> type:
    """The Ray trainer of a ``--workers`` run: PPO's synchronous one for on-policy agents, else the off-policy one;
    other trainers (offline, SQIRL, L2F) are refused in one line."""
    from pixelrl.agents import get_spec
    from pixelrl.distributed.pool import require_ray
    from pixelrl.errors import ConfigError

    require_ray()
    kind = get_spec(cfg.agent_name).trainer
    if kind == "on-policy":
        from pixelrl.distributed.onpolicy import RayOnPolicyTrainer

        return RayOnPolicyTrainer
    if kind != "off-policy":
        raise ConfigError(f"--workers runs off-policy replay agents (drqv2, drm, taco, mentor, sac, ...) and PPO; agent "
                          f"{cfg.agent_name!r} uses the {kind} trainer, which runs in one process (drop --workers)")
    from pixelrl.distributed.offpolicy import RayTrainer

    return RayTrainer
