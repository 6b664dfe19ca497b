"""LeanAdam: the same updates and state as torch.optim.Adam(fused=True), with its fast path actually taken."""

import copy

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from pixelrl.utils.adam import LeanAdam


def _nets(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    twin.load_state_dict(net.state_dict())
    return net, twin


def _train(net, opt, steps, lr_fn=None, clear_at=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    for t in range(steps):
        if lr_fn is not None:
            for group in opt.param_groups:
                group["lr"] = lr_fn(t)
        if clear_at is not None and t == clear_at:
            opt.state.clear()
        x = torch.randn(32, 5, generator=g)
        opt.zero_grad(set_to_none=True)
        net(x).pow(2).mean().backward()
        opt.step()


def test_bit_identical_to_fused_adam_with_lr_changes_and_state_reset(monkeypatch):
    calls = {"parent": 0}
    real = torch.optim.Adam.step

    def counting(self, *a, **k):
        calls["parent"] += 1
        return real(self, *a, **k)

    net, twin = _nets()
    ref = torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)
    lean = LeanAdam(twin.parameters(), lr=1e-2, fused=True)
    _train(net, ref, 12, lr_fn=lambda t: 1e-2 / (t + 1), clear_at=6)
    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    _train(twin, lean, 12, lr_fn=lambda t: 1e-2 / (t + 1), clear_at=6)
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    # only steps 0 and 6 (fresh / cleared state) go through the parent; the 10 others take the lean path
    assert calls["parent"] == 2
    sa, sb = ref.state_dict(), lean.state_dict()
    for k in sa["state"]:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa["state"][k][name], sb["state"][k][name])


def test_state_dict_loads_across_classes_and_param_without_grad_falls_back():
    net, twin = _nets()
    ref = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
    _train(net, ref, 3)
    twin.load_state_dict(net.state_dict())
    lean = LeanAdam(twin.parameters(), lr=1e-3, fused=True)
    lean.load_state_dict(copy.deepcopy(ref.state_dict()))  # a copy: loading shares tensors
    _train(net, ref, 4, seed=5)
    _train(twin, lean, 4, seed=5)
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    # a parameter with no gradient: the parent's step skips it, and so does LeanAdam (through the parent)
    twin[2].bias.grad = None
    before = twin[2].bias.detach().clone()
    twin[0].weight.grad = torch.ones_like(twin[0].weight)
    lean.step()
    assert torch.equal(twin[2].bias, before)


def test_group_with_mixed_dtypes_goes_through_the_parent(monkeypatch):
    calls = {"parent": 0}
    real = torch.optim.Adam.step

    def counting(self, *a, **k):
        calls["parent"] += 1
        return real(self, *a, **k)

    ps = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3, dtype=torch.float64))]
    refs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    lean = LeanAdam(ps, lr=1e-2, fused=True)
    ref = torch.optim.Adam(refs, lr=1e-2, fused=True)
    for _ in range(3):
        for group in (ps, refs):
            for i, p in enumerate(group):
                p.grad = torch.full_like(p, float(i + 1))
        ref.step()
    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    for _ in range(3):
        lean.step()
    assert calls["parent"] == 3  # the fused kernel takes one dtype per call: every step falls back
    for a, b in zip(ps, refs):
        assert torch.equal(a, b)


def test_step_hooks_run_once_per_step_on_both_paths_and_zero_grad_clears():
    torch.optim.Adam([torch.nn.Parameter(torch.ones(1))], fused=True)  # a plain Adam: torch wraps Adam.step too
    net, twin = _nets()
    ref = torch.optim.Adam(net.parameters(), lr=1e-2, fused=True)
    lean = LeanAdam(twin.parameters(), lr=1e-2, fused=True)
    seen = []
    lean.register_step_pre_hook(lambda opt, args, kwargs: seen.append(("pre", opt is lean)))
    lean.register_step_post_hook(lambda opt, args, kwargs: seen.append(("post", opt is lean)))
    glob = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: seen.append(("global", opt is lean)) if opt is lean else None)
    try:
        _train(net, ref, 4)
        _train(twin, lean, 4)  # step 0 takes the parent (fresh state), steps 1-3 the lean path
    finally:
        glob.remove()
    assert seen == [("pre", True), ("post", True), ("global", True)] * 4
    for a, b in zip(net.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    lean.zero_grad()
    assert all(p.grad is None for p in twin.parameters())
    twin(torch.ones(2, 5)).sum().backward()
    lean.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in twin.parameters())
    with torch.autograd.profiler.profile() as prof:  # under the profiler: torch's named ranges, same update
        twin(torch.ones(2, 5)).sum().backward()
        lean.step()
        lean.zero_grad()
    names = {e.name for e in prof.function_events}
    assert "Optimizer.step#LeanAdam.step" in names and "Optimizer.zero_grad#LeanAdam.zero_grad" in names
