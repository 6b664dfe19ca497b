"""Evaluation faults (issue 14): an env that raises while evaluating is reported as the training env's error is --
one line with the env's error, where (episode, step, agent step) and the action -- and a non-finite action stops
before it reaches the env. Test-double envs; no simulator."""

import numpy as np
import pytest
from gymnasium.spaces import Box

from pixelrl.errors import DivergenceError, EnvStepError
from pixelrl.train.evaluate import evaluate_agent, run_episodes


class _Env:
    """Episodes of 5 steps; raises at step ``fail_at`` of the episode number ``fail_episode`` (0-based)."""

    env_id = "dmc/fake"

    def __init__(self, fail_at=None, fail_episode=0, fail_reset=False):
        self.fail_at, self.fail_episode, self.fail_reset = fail_at, fail_episode, fail_reset
        self.episode, self.t = -1, 0

    def reset(self, seed=None):
        self.episode += 1
        self.t = 0
        if self.fail_reset:
            raise ValueError("cannot load the model\nsecond line")
        return np.zeros(3, np.float32), {}

    def step(self, action):
        if self.episode == self.fail_episode and self.t == self.fail_at:
            raise RuntimeError("Physics state is invalid. Warning(s) raised: mjWARN_BADCTRL")
        self.t += 1
        return np.zeros(3, np.float32), 1.0, False, self.t >= 5, {}


class _Agent:
    def __init__(self, action=(0.25, -0.5)):
        self.action = np.array(action, np.float32)

    def act(self, obs, *, step, eval_mode):
        return self.action


def _evaluate(env, agent=None):
    return evaluate_agent(env, agent or _Agent(), step=1000, episodes=2, seed=0, index=0,
                          action_space=Box(-1, 1, (2,)), eval_random=False)


def test_an_env_that_raises_during_evaluation_is_one_line_with_the_step_and_the_action():
    with pytest.raises(EnvStepError) as info:
        _evaluate(_Env(fail_at=3, fail_episode=1))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("the environment dmc/fake raised RuntimeError: Physics state is invalid. Warning(s) raised: "
                          "mjWARN_BADCTRL at step 3 of evaluation episode 2 of 2 (agent step 1,000), on the action [")
    assert "0.25" in msg and "-0.5" in msg


def test_an_env_that_raises_on_reset_during_evaluation_is_one_line():
    with pytest.raises(EnvStepError, match=r"^the environment dmc/fake raised ValueError: cannot load the model "
                                           r"second line at the reset of evaluation episode 1 of 2 \(agent step "
                                           r"1,000\)$"):
        _evaluate(_Env(fail_reset=True))


def test_a_non_finite_action_in_evaluation_never_reaches_the_env():
    env = _Env()
    with pytest.raises(DivergenceError, match=r"not finite .* at step 0 of evaluation episode 1 of 2 \(agent step "
                                              r"1,000\).*diverged"):
        _evaluate(env, _Agent((0.1, float("nan"))))
    assert env.t == 0


def test_the_random_baseline_and_plain_run_episodes_name_the_env_too():
    with pytest.raises(EnvStepError, match=r"random policy's baseline"):
        evaluate_agent(_Env(fail_at=2, fail_episode=2), _Agent(), step=0, episodes=2, seed=0, index=0,
                       action_space=Box(-1, 1, (2,)), eval_random=True)
    with pytest.raises(EnvStepError, match=r"dmc/fake raised RuntimeError: .* at step 1 of evaluation episode 1 of "
                                           r"1, on the action \[0.3\]$"):
        run_episodes(_Env(fail_at=1), lambda o: np.array([0.3], np.float32), 1, seed=0, stream=2, index=0)


def test_a_healthy_env_still_evaluates():
    row, _ = _evaluate(_Env())
    assert row == {"eval_return": 5.0, "eval_return_std": 0.0, "eval_length": 5.0}
