import json

import numpy as np
import pytest
import torch

from pixelrl.errors import CorruptFileError
from pixelrl.utils.checkpoint import flatten_state, latest_checkpoint, load_checkpoint, save_checkpoint, unflatten_state


def _state():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"net": net.state_dict(), "opt": opt.state_dict(), "step": 7, "sched": (1.0, 0.1, 500),
            "arr": np.arange(5, dtype=np.int16), "name": "x", "none": None}


def test_flatten_round_trip_preserves_types():
    s = _state()
    tensors, tree = flatten_state(s)
    json.dumps(tree)  # the non-tensor part is plain JSON
    back = unflatten_state(json.loads(json.dumps(tree)), tensors)
    assert back["step"] == 7 and back["sched"] == (1.0, 0.1, 500) and back["none"] is None
    assert set(back["opt"]["state"]) == {0, 1}  # int keys survive JSON
    assert back["arr"].dtype == np.int16 and (back["arr"] == np.arange(5)).all()
    for k, v in s["net"].items():
        assert torch.equal(back["net"][k], v)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    opt.load_state_dict(back["opt"])  # a real optimizer accepts the restored state


def test_save_load_latest_and_prune(tmp_path):
    for i in range(4):
        save_checkpoint(tmp_path, f"c{i}", {"i": i, "t": torch.full((3,), float(i))}, keep=2)
    assert latest_checkpoint(tmp_path).name == "c3"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["c2", "c3"]
    st = load_checkpoint(latest_checkpoint(tmp_path))
    assert st["i"] == 3 and torch.equal(st["t"], torch.full((3,), 3.0))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_manifest", "garbage_json"])
def test_corrupt_checkpoint_is_named_and_not_loaded(tmp_path, damage):
    path = save_checkpoint(tmp_path, "c", _state())
    if damage == "truncate":
        target = path / "tensors.safetensors"
        target.write_bytes(target.read_bytes()[:-10])
    elif damage == "flip":
        target = path / "tensors.safetensors"
        b = bytearray(target.read_bytes())
        b[len(b) // 2] ^= 0xFF
        target.write_bytes(bytes(b))
    elif damage == "delete_manifest":
        target = path
        (path / "manifest.json").unlink()
    else:
        target = path / "manifest.json"
        target.write_text("{not json")
    with pytest.raises(CorruptFileError) as e:
        load_checkpoint(path)
    assert str(target) in str(e.value)


def test_missing_pointer_target(tmp_path):
    save_checkpoint(tmp_path, "c", {"a": 1})
    (tmp_path / "latest.json").write_text(json.dumps({"name": "gone"}))
    with pytest.raises(CorruptFileError, match="gone"):
        latest_checkpoint(tmp_path)
