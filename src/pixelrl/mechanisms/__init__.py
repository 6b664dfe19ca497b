"""The seed papers' ideas as small parts with narrow hooks into the actor-critic core.

Each module holds one mechanism: its config dataclass (nested in the agent config), its math (tested alone) and an
``install(agent)`` that wires it into the agent through the hooks documented in :mod:`pixelrl.agents.drqv2`.
Nothing here imports ``pixelrl.agents``, ``pixelrl.train`` or ``pixelrl.envs``.
"""
