"""precision='auto': fp32 without native bf16; with it, the timed probe decides; nothing random or stored is touched."""

import time

import pytest
import torch

from helpers import act_space, pixel_space
from pixelrl.agents.drqv2 import DrQv2Agent, DrQv2Config
from pixelrl.errors import ConfigError
from pixelrl.utils import precision as P


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.delenv(P.ENV_VAR, raising=False)  # the suite's conftest pins auto to fp32; these tests decide
    P._CACHE.clear()
    yield
    P._CACHE.clear()


def _never(bf16):
    raise AssertionError("the probe must not run without native bf16")


def test_no_native_bf16_means_fp32_without_timing(monkeypatch):
    monkeypatch.setattr(P, "cpu_flags", lambda: {"avx2", "fma"})
    ok, why = P.native_bf16(torch.device("cpu"))
    assert not ok and "avx512_bf16" in why
    choice, reason = P.choose_precision("cpu", _never)
    assert choice == "fp32" and reason.startswith("fp32:") and "no avx512_bf16" in reason


def test_flags_without_avx512_kernels_mean_fp32(monkeypatch):
    # e.g. ATEN_CPU_CAPABILITY=avx2 on a bf16 CPU: torch's kernels would not use the instructions
    monkeypatch.setattr(P, "cpu_flags", lambda: {"avx512_bf16", "avx512f"})
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert P.choose_precision("cpu", _never)[0] == "fp32"


def _native(monkeypatch):
    monkeypatch.setattr(P, "native_bf16", lambda device: (True, "the CPU has avx512_bf16 (test)"))


@pytest.mark.parametrize("bf16_s,fp32_s,want", [(0.02, 0.06, "bf16"), (0.04, 0.02, "fp32"),
                                                (0.058, 0.06, "fp32")])
def test_native_bf16_is_timed(monkeypatch, bf16_s, fp32_s, want):
    _native(monkeypatch)
    calls = []

    def probe(bf16):
        calls.append(bf16)
        time.sleep(bf16_s if bf16 else fp32_s)

    choice, reason = P.choose_precision("cpu", probe, key=("t", bf16_s, fp32_s))
    assert choice == want
    assert calls.count(True) >= 2 and calls.count(False) >= 2  # alternating repeats, not a single sample
    assert reason.startswith(want + ":") and "ms in bf16" in reason and "ms in fp32" in reason


def test_very_slow_bf16_is_not_repeated(monkeypatch):
    _native(monkeypatch)
    calls = []

    def probe(bf16):
        calls.append(bf16)
        time.sleep(0.04 if bf16 else 0.005)

    assert P.choose_precision("cpu", probe, key=("slow",))[0] == "fp32"
    assert calls.count(True) == 1


def test_decision_is_cached_per_key(monkeypatch):
    _native(monkeypatch)
    n = []
    probe = lambda bf16: n.append(bf16)  # noqa: E731
    first = P.choose_precision("cpu", probe, key=("k",))
    count = len(n)
    assert P.choose_precision("cpu", probe, key=("k",)) == first and len(n) == count
    P.choose_precision("cpu", probe, key=("other",))
    assert len(n) > count


def test_probe_leaves_random_streams_alone(monkeypatch):
    _native(monkeypatch)
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    P.choose_precision("cpu", lambda bf16: torch.rand(1000), key=("rng",))
    assert torch.equal(torch.rand(4), expected)


def test_agent_auto_resolves_and_matches_fp32_agent(monkeypatch):
    """An 'auto' agent gets a concrete precision and a reason; building it draws the same weights and leaves the
    same RNG state as an fp32 agent (the probe is invisible to seeding), and its .grad fields stay empty."""
    _native(monkeypatch)  # force the timed path, whatever this machine is
    kw = dict(batch_size=8, feature_dim=8, hidden_dim=16, encoder_channels=(8, 8), encoder_strides=(2, 1))
    torch.manual_seed(0)
    auto = DrQv2Agent(pixel_space(), act_space(), DrQv2Config(precision="auto", **kw))
    after_auto = torch.rand(3)
    torch.manual_seed(0)
    fp32 = DrQv2Agent(pixel_space(), act_space(), DrQv2Config(precision="fp32", **kw))
    after_fp32 = torch.rand(3)
    assert torch.equal(after_auto, after_fp32)
    for a, b in zip(auto.critic.parameters(), fp32.critic.parameters()):
        assert torch.equal(a, b)
    assert auto.precision in ("fp32", "bf16") and "probe update" in auto.precision_reason
    assert fp32.precision == "fp32" and "set in the config" in fp32.precision_reason
    assert all(p.grad is None for m in (auto.encoder, auto.actor, auto.critic) for p in m.parameters())
    assert DrQv2Config().precision == "auto"


def test_bad_precision_is_one_clear_error():
    with pytest.raises(ConfigError, match="'auto', 'fp32' or 'bf16'"):
        DrQv2Config(precision="fp16")


def test_tiny_networks_keep_fp32_without_timing_bf16(monkeypatch):
    _native(monkeypatch)
    calls = []
    choice, reason = P.choose_precision("cpu", calls.append, key=("tiny",))
    assert choice == "fp32" and "gain nothing from bf16" in reason and True not in calls


@pytest.mark.parametrize("value", ["fp32", "bf16"])
def test_environment_variable_fixes_what_auto_means(monkeypatch, value):
    monkeypatch.setenv(P.ENV_VAR, value)
    assert P.choose_precision("cpu", _never) == (value, f"{value}: set by the environment variable {P.ENV_VAR}")
    kw = dict(batch_size=8, feature_dim=8, hidden_dim=16, encoder_channels=(8, 8), encoder_strides=(2, 1))
    assert DrQv2Agent(pixel_space(), act_space(), DrQv2Config(**kw)).precision == value
    # an explicit config value is not overridden
    assert DrQv2Agent(pixel_space(), act_space(), DrQv2Config(precision="fp32", **kw)).precision == "fp32"


def test_bad_environment_variable_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(P.ENV_VAR, "fp16")
    with pytest.raises(ConfigError, match="PIXELRL_PRECISION"):
        P.choose_precision("cpu", _never)
