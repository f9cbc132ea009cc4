"""
The pipecat peer's virtual environment: built on demand under the project's cache folder.

The folder is C{$VOICECALLD_CACHE} if set, else C{.cache/} at the top of the repository (as the
gateway shim's toolchain does).  The environment is C{pipecat-<version>/} in it, made with the
machine's C{python3} and filled from C{requirements-pipecat.txt}; a stamp file holding those
requirements marks it complete, so a second call does nothing and a changed pin reinstalls.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "requirements-pipecat.txt"
ROOT = HERE.parent.parent
STAMP = ".installed"


class VenvError(RuntimeError):
    """The pipecat environment could not be built."""


def pinned_version() -> str:
    """The pipecat-ai version the requirements file pins."""
    match = re.search(r"^pipecat-ai(?:\[[^\]]*\])?==(\S+)", REQUIREMENTS.read_text(), re.M)
    if match is None:
        raise VenvError(f"{REQUIREMENTS}: no exact pin of pipecat-ai")
    return match.group(1)


def cache_dir() -> Path:
    """Where the project caches toolchains: C{$VOICECALLD_CACHE} or the repository's .cache/."""
    return Path(os.environ.get("VOICECALLD_CACHE") or ROOT / ".cache")


def venv_dir() -> Path:
    """The pipecat environment's folder (it may not exist yet)."""
    return cache_dir() / f"pipecat-{pinned_version()}"


def python() -> Path | None:
    """The environment's python if the environment is complete, else None."""
    folder = venv_dir()
    stamp = folder / STAMP
    if stamp.is_file() and stamp.read_text() == REQUIREMENTS.read_text():
        return folder / "bin" / "python"
    return None


def ensure(log=print, base_python: str = "python3") -> Path:
    """The environment's python, building the environment first if it is missing or stale."""
    ready = python()
    if ready is not None:
        return ready
    folder = venv_dir()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready = python()  # another process may have built it while this one waited
        if ready is not None:
            return ready
        log(f"peers: installing pipecat-ai {pinned_version()} into {folder} (a few minutes)")
        shutil.rmtree(folder, ignore_errors=True)
        pip = [str(folder / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        steps = [[base_python, "-m", "venv", str(folder)], [*pip, "-r", str(REQUIREMENTS)]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise VenvError(f"{' '.join(step[:3])} failed: {done.stderr.strip()[-2000:]}")
        (folder / STAMP).write_text(REQUIREMENTS.read_text())
    return folder / "bin" / "python"
