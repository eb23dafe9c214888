"""All-or-nothing output folders for the command line.

:class:`OutputFolder` checks the output location before anything is computed
(an existing non-folder, a folder inside the input, a non-empty folder without
``--overwrite``, no permission to write), collects the new files in a hidden
temporary folder next to it, and only at the end replaces the previous set of
outputs by the new one: the old files are first moved aside, the new ones moved
in, and the old ones put back if that fails. A failure, Ctrl-C, SIGTERM or
SIGHUP before the end leaves the output folder as it was. Temporary folders of
runs that were killed outright (SIGKILL, a power cut) are removed by the next
run that writes to the same place, once their process is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputError", "OutputFolder", "signals_as_interrupts"]

_TMP_MARK = ".tmp-"


class OutputError(Exception):
    """A problem with the output location that the user can fix."""


def _is_inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def signals_as_interrupts():
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so they clean up like Ctrl-C."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            with contextlib.suppress(ValueError):  # not the main thread: leave them alone
                previous[number] = signal.signal(number, interrupt)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class OutputFolder:
    """The output folder of one command, written all at once.

    Parameters
    ----------
    path : path-like
        The output folder.
    names : tuple of str
        The files (and folders) the command writes; only these are replaced in
        a folder that already holds other files (``--overwrite``).
    overwrite : bool
        Whether a non-empty folder may be written to.
    input_folder : path-like, optional
        Never written to: an output inside it is refused.
    """

    def __init__(self, path, names, overwrite=False, input_folder=None):
        self.path = Path(os.path.abspath(path))
        self.names = tuple(names)
        self.overwrite = overwrite
        self.input_folder = input_folder
        self.tmp = None

    # ----------------------------------------------------------------- before computing
    def check(self) -> OutputFolder:
        """Refuse a bad output location now, before any work; clean stale temporaries."""
        if self.input_folder is not None:
            source = Path(os.path.abspath(self.input_folder)).resolve()
            if _is_inside(self.path.resolve(), source):
                raise OutputError(
                    f"--output {self.path} is inside the input folder {source}; the input "
                    "folder is never written to: choose another output folder"
                )
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"--output {self.path} exists and is not a folder")
        if self.path.is_dir() and any(self.path.iterdir()) and not self.overwrite:
            raise OutputError(
                f"--output {self.path} is not empty; pass --overwrite to replace its "
                f"{', '.join(self.names)}"
            )
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next(
                (p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None
            )
            why = exc.strerror if blocker is None else f"{blocker} is a file, not a folder"
            raise OutputError(f"cannot create the folder {parent} for --output: {why}") from None
        self.clean_stale()
        try:  # can we write there? (the new outputs are first written next to it)
            probe = tempfile.mkdtemp(
                prefix=f".{self.path.name}{_TMP_MARK}{os.getpid()}-", dir=parent
            )
            os.rmdir(probe)
        except OSError as exc:
            raise OutputError(
                f"cannot write to --output {self.path}: its folder {parent} does not accept "
                f"new files ({exc.strerror})"
            ) from None
        if self.path.is_dir() and not os.access(self.path, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write to --output {self.path}: permission denied")
        return self

    def clean_stale(self) -> None:
        """Remove temporary folders left next to the output by killed runs."""
        prefix = f".{self.path.name}{_TMP_MARK}"
        for entry in self.path.parent.glob(prefix + "*"):
            pid = entry.name[len(prefix) :].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)

    # ----------------------------------------------------------------- writing
    def __enter__(self) -> Path:
        self.tmp = Path(
            tempfile.mkdtemp(
                prefix=f".{self.path.name}{_TMP_MARK}{os.getpid()}-", dir=self.path.parent
            )
        )
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._commit()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def _commit(self) -> None:
        self.check()  # it may have changed while we computed
        if not self.path.exists() or not any(self.path.iterdir()):
            if self.path.exists():
                self.path.rmdir()
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self.tmp, 0o777 & ~umask)
            os.replace(self.tmp, self.path)
            self.tmp = Path(str(self.tmp) + ".gone")  # nothing left to remove
            return
        aside = Path(
            tempfile.mkdtemp(
                prefix=f".{self.path.name}{_TMP_MARK}{os.getpid()}-old-", dir=self.path.parent
            )
        )
        moved_old, moved_new = [], []
        try:
            for name in self.names:  # the previous set of outputs, aside
                if (self.path / name).exists():
                    os.replace(self.path / name, aside / name)
                    moved_old.append(name)
            for name in self.names:  # the new set in
                if (self.tmp / name).exists():
                    os.replace(self.tmp / name, self.path / name)
                    moved_new.append(name)
        except BaseException:
            for name in moved_new:  # put everything back as it was
                os.replace(self.path / name, self.tmp / name)
            for name in moved_old:
                os.replace(aside / name, self.path / name)
            shutil.rmtree(aside, ignore_errors=True)  # empty again (kept if restoring failed)
            raise
        shutil.rmtree(aside, ignore_errors=True)
