"""scripts/docs_curves.py draws every docs figure from the committed result files, and each page shows its figure."""

import pytest

from helpers import ROOT, load_script


def _load():
    return load_script("scripts/docs_curves.py")


def test_every_figure_draws_from_committed_results_and_is_shown_on_a_page(tmp_path, monkeypatch):
    mod = _load()
    monkeypatch.setattr(mod, "IMG", tmp_path)
    assert mod.main(["draw"]) == 0
    pages = "\n".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    for name in mod.FIGURES:
        png = tmp_path / f"docs_{name}.png"
        assert png.exists() and png.stat().st_size > 10_000, name  # a real plot, not an empty canvas
        assert f"img/docs_{name}.png" in pages, f"no docs page shows docs_{name}.png"


def test_pack_refuses_a_folder_that_is_not_a_run(tmp_path):
    mod = _load()
    with pytest.raises(SystemExit, match="no config.json"):
        mod.main(["pack", "--run", str(tmp_path), "--out", str(tmp_path / "x.json"), "--command", "c", "--what", "w"])
