"""Check a run's settings against the outside world before anything is written.

A wrong URL, a missing key variable or an unknown model name should fail in a second with one
line, not after the first level of a long search.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import httpx

from drpo.backends.errors import CredentialError
from drpo.backends.factory import api_key_for
from drpo.backends.providers import resolve_kind
from drpo.state.settings import ROLES, ConfigError, Settings

PROBE_TIMEOUT = 10.0


def check_settings(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """Raise ConfigError / CredentialError naming the first problem found; return warnings.

    Every replica of a role is probed: a dead one is a warning while another one is alive (the
    run fails over to the others), an error when none is.
    """
    environ = os.environ if environ is None else environ
    # Both databases are checked before either is written: a run whose checkpoint file cannot
    # be created must not leave a half-started run in the run store.
    check_database_path("run store", Path(settings.store))
    if settings.checkpoint.backend == "sqlite":
        check_database_path("checkpoint database", Path(settings.checkpoints))
    elif settings.checkpoint.password_env and not environ.get(settings.checkpoint.password_env):
        raise CredentialError(
            f"environment variable {settings.checkpoint.password_env} "
            "(checkpoint.password_env) is not set"
        )
    for role in ROLES:
        role_settings = settings.role(role)
        if role_settings.is_embedded:
            resolve_kind(role, role_settings, "")
            _check_embedded_model(role, role_settings.model, role_settings.model_path)
        else:
            api_key_for(role, role_settings, environ)
    probed: dict[str, list[str] | ConfigError | None] = {}
    warnings: list[str] = []
    for role in ROLES:
        role_settings = settings.role(role)
        if role_settings.is_embedded:
            continue
        key = api_key_for(role, role_settings, environ)
        dead: list[ConfigError] = []
        for replica in role_settings.replicas:
            url = replica.url
            if url not in probed:
                try:
                    probed[url] = _served_models(role, url, key)
                except ConfigError as exc:
                    probed[url] = exc
            served = probed[url]
            if isinstance(served, ConfigError):
                dead.append(served)
                continue
            if served is not None and role_settings.model not in served:
                shown = ", ".join(served[:8]) + (" …" if len(served) > 8 else "")
                raise ConfigError(
                    f"{role}: model {role_settings.model!r} is not served at "
                    f"{url} (it serves: {shown or 'nothing'})"
                )
        if len(dead) == len(role_settings.replicas):
            if len(dead) == 1:
                raise dead[0]
            raise ConfigError(f"{role}: no replica is reachable ({dead[0]}, …)")
        # A provider that contradicts what the endpoint says about itself fails here, before
        # anything is written, rather than as a refused first call.
        resolve_kind(role, role_settings, key)
        warnings += [f"{error} — calls go to the other replicas" for error in dead]
    return warnings


def check_database_path(label: str, path: Path) -> None:
    """Raise ConfigError unless `path` is, or can be created as, a writable regular file.

    Nothing is created: the nearest existing ancestor must be a writable directory. (Root passes
    any permission check, but not a read-only file system or a path under a regular file.)
    """
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"{label} {path} is not a regular file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"{label} {path} is not writable")
        return
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"cannot create {label} {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create {label} {path}: {ancestor} is not writable")


def _check_embedded_model(role: str, model: str, model_path: os.PathLike[str] | None) -> None:
    from drpo.backends.model_catalogue import CATALOGUE

    if model_path is not None:
        path = os.fspath(model_path)
        if not os.path.isfile(path):
            raise ConfigError(f"{role}.model_path: no such file: {path}")
        return
    if model not in CATALOGUE:
        raise ConfigError(
            f"{role}: unknown embedded model {model!r} (choose from {', '.join(CATALOGUE)}, "
            "or set model_path to a GGUF file)"
        )


def _served_models(role: str, endpoint: str, key: str) -> list[str] | None:
    """The endpoint's model list; None when it has no usable list (not every server does)."""
    try:
        reply = httpx.get(
            f"{endpoint}/models", headers={"Authorization": f"Bearer {key}"}, timeout=PROBE_TIMEOUT
        )
    except httpx.HTTPError as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"{role}: endpoint {endpoint} is unreachable ({reason})") from None
    if reply.status_code in (401, 403):
        raise CredentialError(
            f"{role}: endpoint {endpoint} rejected the API key (HTTP {reply.status_code})"
        )
    if reply.status_code != 200:
        return None
    try:
        data = reply.json().get("data")
        return [str(item["id"]) for item in data] if isinstance(data, list) else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
