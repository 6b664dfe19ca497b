"""How the CLI reports what went wrong: one line per error, warning or interruption (issue 14)."""

import io
import warnings

import pixelrl.cli.main as cli
from pixelrl.errors import DivergenceWarning, Interrupted, StorageError


def _run(monkeypatch, capsys, fn):
    monkeypatch.setitem(cli.COMMANDS, "resume", fn)
    rc = cli.main(["resume", "x"])
    return rc, capsys.readouterr().err.splitlines()


def test_errors_and_interruptions_are_one_line(monkeypatch, capsys):
    import errno

    def full(argv):
        raise StorageError("/runs/a/metrics.jsonl", OSError(errno.ENOSPC, "No space left on device"), 2048)

    rc, err = _run(monkeypatch, capsys, full)
    assert rc == 1 and len(err) == 1 and err[0].startswith("pixelrl resume: error: cannot write /runs/a/metrics.jsonl")

    def interrupted(argv):
        raise Interrupted("interrupted at frame 3,000. The last checkpoint is c; `pixelrl resume r` continues from it.")

    rc, err = _run(monkeypatch, capsys, interrupted)
    assert rc == 130 and err == ["pixelrl resume: interrupted at frame 3,000. The last checkpoint is c; "
                                 "`pixelrl resume r` continues from it."]

    def ctrl_c(argv):  # before a trainer exists (while loading)
        raise KeyboardInterrupt

    rc, err = _run(monkeypatch, capsys, ctrl_c)
    assert rc == 130 and err == ["pixelrl resume: interrupted"]


def test_pixelrls_warnings_are_one_line_and_others_untouched():
    seen = []
    show = cli._warning_printer("train", lambda *a: seen.append(a))
    out = io.StringIO()
    show(DivergenceWarning("critic_loss averaged 3e+07"), DivergenceWarning, cli.__file__, 10, out)
    assert out.getvalue() == "pixelrl train: warning: critic_loss averaged 3e+07\n"
    show(UserWarning("elsewhere"), UserWarning, warnings.__file__, 1, out)
    assert len(seen) == 1 and out.getvalue().count("\n") == 1
