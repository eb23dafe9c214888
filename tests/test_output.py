"""All-or-nothing output folders (skanomclust._output): checked first, replaced as a whole."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from skanomclust import _output
from skanomclust._output import OutputError, OutputFolder, signals_as_interrupts

NAMES = ("assignments.csv", "report.html", "model.joblib", "metrics.json")
OUTPUT_MODULE = Path(_output.__file__)


def _listing(folder):
    """{relative path: content} of every file below ``folder``."""
    return {
        p.relative_to(folder).as_posix(): p.read_text()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def _temporaries(parent):
    return sorted(p.name for p in Path(parent).iterdir() if p.name.startswith("."))


def _write(folder, files):
    for name, text in files.items():
        (Path(folder) / name).write_text(text)


@pytest.fixture
def old_run(tmp_path):
    """An output folder holding the outputs of an earlier run and a file of the user's."""
    out = tmp_path / "out"
    out.mkdir()
    _write(out, {"assignments.csv": "old csv", "model.joblib": "old model"})
    _write(out, {"metrics.json": "old metrics", "notes.txt": "the user's"})
    return out


# ----------------------------------------------------------------- checked before computing
def test_new_folder_appears_only_at_the_end(tmp_path):
    out = tmp_path / "deeper" / "out"
    folder = OutputFolder(out, NAMES).check()
    assert not out.exists()  # nothing is created by the check except missing parents
    with folder as tmp:
        assert tmp.parent == out.parent and tmp.name.startswith(".out.tmp-")
        _write(tmp, {"assignments.csv": "new csv", "report.html": "new report"})
        assert not out.exists()
    assert _listing(out) == {"assignments.csv": "new csv", "report.html": "new report"}
    assert _temporaries(out.parent) == []
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0o700


def test_an_empty_existing_folder_needs_no_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with OutputFolder(out, NAMES).check() as tmp:
        _write(tmp, {"run.json": "{}"})  # not among NAMES: a new folder takes all of tmp
    assert _listing(out) == {"run.json": "{}"}


def test_non_empty_output_without_overwrite_is_refused(old_run):
    before = _listing(old_run)
    with pytest.raises(OutputError) as info:
        OutputFolder(old_run, NAMES).check()
    message = str(info.value)
    assert message.startswith(f"--output {old_run} is not empty; pass --overwrite")
    assert "assignments.csv, report.html, model.joblib, metrics.json" in message
    assert _listing(old_run) == before


def test_output_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(OutputError, match=r"exists and is not a folder"):
        OutputFolder(target, NAMES, overwrite=True).check()
    assert target.read_text() == "a file"


def test_output_below_a_file_is_refused_naming_the_file(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError) as info:
        OutputFolder(blocker / "run" / "out", NAMES).check()
    assert str(info.value) == (
        f"cannot create the folder {blocker / 'run'} for --output: "
        f"{blocker} is a file, not a folder"
    )


def test_output_inside_the_input_folder_is_refused(tmp_path):
    source = tmp_path / "images"
    source.mkdir()
    with pytest.raises(OutputError, match="is inside the input folder"):
        OutputFolder(source / "out", NAMES, input_folder=source).check()
    assert list(source.iterdir()) == []


def test_unwritable_parent_names_the_users_path(tmp_path, monkeypatch):
    """The probe fails: the message names --output and its folder, never a temporary."""

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(kwargs.get("dir")) + "/.out.tmp-1-x")

    monkeypatch.setattr(_output.tempfile, "mkdtemp", refuse)
    out = tmp_path / "out"
    with pytest.raises(OutputError) as info:
        OutputFolder(out, NAMES).check()
    assert str(info.value) == (
        f"cannot write to --output {out}: its folder {tmp_path} does not accept new files "
        "(Permission denied)"
    )
    assert ".tmp-" not in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_parent_is_refused_before_any_work(tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(OutputError) as info:
            OutputFolder(parent / "out", NAMES).check()
    finally:
        parent.chmod(0o755)
    assert f"--output {parent / 'out'}" in str(info.value)
    assert ".tmp-" not in str(info.value)


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux sysfs")
def test_a_read_only_file_system_is_refused(tmp_path):
    with pytest.raises(OutputError) as info:
        OutputFolder("/sys/skanomclust-out", NAMES).check()
    assert str(info.value).startswith(
        "cannot write to --output /sys/skanomclust-out: its folder /sys does not accept new files"
    )


# ----------------------------------------------------------------- replaced as a whole
def test_overwrite_replaces_the_whole_set(old_run):
    with OutputFolder(old_run, NAMES, overwrite=True).check() as tmp:
        _write(tmp, {"assignments.csv": "new csv", "report.html": "new report"})
        assert _listing(old_run)["assignments.csv"] == "old csv"  # untouched until the end
    # the old model and metrics belong to the old set: gone; the user's file is kept
    assert _listing(old_run) == {
        "assignments.csv": "new csv",
        "report.html": "new report",
        "notes.txt": "the user's",
    }
    assert _temporaries(old_run.parent) == []


@pytest.mark.parametrize("failing_move", [1, 2, 4])
def test_a_failed_replacement_restores_the_old_set(old_run, monkeypatch, failing_move):
    """Moves: 3 old files aside, then the new ones in; a failure at any of them undoes all."""
    before = _listing(old_run)
    moves = []
    real_replace = os.replace

    def flaky(src, dst):
        moves.append((src, dst))
        if len(moves) == failing_move:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    folder = OutputFolder(old_run, NAMES, overwrite=True).check()
    with pytest.raises(OSError, match="No space left"), folder as tmp:
        _write(tmp, {"assignments.csv": "new csv", "report.html": "new report"})
        monkeypatch.setattr(_output.os, "replace", flaky)
    monkeypatch.undo()
    assert len(moves) == 2 * failing_move - 1  # each move done before the failure, undone
    assert _listing(old_run) == before
    assert _temporaries(old_run.parent) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_error_while_computing_leaves_the_folder_as_it_was(old_run, error):
    before = _listing(old_run)
    with pytest.raises(error), OutputFolder(old_run, NAMES, overwrite=True).check() as tmp:
        _write(tmp, {"assignments.csv": "half a csv"})
        raise error
    assert _listing(old_run) == before
    assert _temporaries(old_run.parent) == []


def test_the_location_is_checked_again_before_replacing(tmp_path):
    out = tmp_path / "out"
    folder = OutputFolder(out, NAMES).check()
    with pytest.raises(OutputError, match="is not empty"), folder as tmp:
        _write(tmp, {"assignments.csv": "new"})
        out.mkdir()  # someone else wrote there meanwhile
        (out / "theirs.txt").write_text("theirs")
    assert _listing(out) == {"theirs.txt": "theirs"}
    assert _temporaries(tmp_path) == []


# ----------------------------------------------------------------- killed runs
def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_killed_runs_are_cleaned(tmp_path):
    out = tmp_path / "out"
    dead = _dead_pid()
    stale = [tmp_path / f".out.tmp-{dead}-abc", tmp_path / f".out.tmp-{dead}-old-def"]
    alive = tmp_path / f".out.tmp-{os.getppid()}-ghi"  # a run still going: kept
    other = tmp_path / f".other.tmp-{dead}-jkl"  # another output's: not ours to remove
    for folder in (*stale, alive, other):
        folder.mkdir()
        (folder / "assignments.csv").write_text("partial")
    OutputFolder(out, NAMES).check()
    assert _temporaries(tmp_path) == sorted([alive.name, other.name])


def _child(tmp_path, body):
    """A Python child that loads _output alone (no torch: starts in a fraction of a second)."""
    script = textwrap.dedent(
        f"""
        import importlib.util, signal, sys, time
        # Ctrl-C as in an interactive shell, even when the tests were started with
        # SIGINT ignored (in the background of a script, or under nohup).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        spec = importlib.util.spec_from_file_location("_output", {str(OUTPUT_MODULE)!r})
        _output = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_output)
        out = {str(tmp_path / "out")!r}
        """
    ) + textwrap.dedent(body)
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_run_killed_outright_is_cleaned_by_the_next(tmp_path):
    child = _child(
        tmp_path,
        """
        folder = _output.OutputFolder(out, ("assignments.csv",)).check()
        with folder as tmp:
            (tmp / "assignments.csv").write_text("partial")
            print("ready", flush=True)
            time.sleep(60)
        """,
    )
    assert child.stdout.readline().strip() == "ready"
    child.kill()  # SIGKILL: no clean-up can run
    child.wait(timeout=30)
    (left,) = _temporaries(tmp_path)
    assert left.startswith(f".out.tmp-{child.pid}-")
    assert (tmp_path / left / "assignments.csv").read_text() == "partial"
    OutputFolder(tmp_path / "out", NAMES).check()
    assert _temporaries(tmp_path) == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name
)
def test_sigterm_and_sighup_clean_up_like_ctrl_c(tmp_path, signum):
    child = _child(
        tmp_path,
        """
        try:
            with _output.signals_as_interrupts():
                with _output.OutputFolder(out, ("assignments.csv",)).check() as tmp:
                    (tmp / "assignments.csv").write_text("partial")
                    print("ready", flush=True)
                    time.sleep(60)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
        """,
    )
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signum)
    assert child.wait(timeout=30) == 130
    assert child.stdout.read().strip() == "interrupted"
    assert child.stderr.read() == ""
    assert list(tmp_path.iterdir()) == []


def test_signal_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    with signals_as_interrupts():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler interrupts the sleep
    assert {s: signal.getsignal(s) for s in before} == before


# ----------------------------------------------------------------- through the command line
def test_cli_checks_the_output_before_reading_or_computing(tmp_path, monkeypatch, capsys):
    import skanomclust.datasets
    from skanomclust.cli import main

    def too_late(*args, **kwargs):
        raise AssertionError("the input was read before the output was checked")

    monkeypatch.setattr(skanomclust.datasets, "load_texture_folder", too_late)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_output.tempfile, "mkdtemp", refuse)
    (tmp_path / "images").mkdir()
    out = tmp_path / "results" / "out"
    status = main(["cluster", str(tmp_path / "images"), "-o", str(out), "--weights", "none"])
    assert status == 2
    assert capsys.readouterr().err == (
        f"skanomclust: error: cannot write to --output {out}: its folder {out.parent} does "
        "not accept new files (Permission denied)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "results"]
    assert list((tmp_path / "results").iterdir()) == []
