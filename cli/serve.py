"""`drpo serve`: run the aligned model (base model + optimized prompt) as an OpenAI endpoint.

`serve_command` is a plain typer command, mounted by the main CLI as `drpo serve`. It serves a
run from the run store (`drpo serve RUN`) or a `drpo export RUN --format json` file
(`drpo serve --prompt-file EXPORT.json`), forwarding to the base model the run was optimized
with (`--endpoint/--model/--api-key-env` point it elsewhere). An embedded base model is started
for the purpose and stopped on exit. Every failure a user can cause ends with one `error: …`
line on stderr and exit code 2; Ctrl-C stops the server and exits with 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from pydantic import ValidationError
from rich.console import Console

from drpo.backends.embedded import EmbeddedServerError, EmbeddedServerPool
from drpo.backends.errors import CredentialError
from drpo.backends.model_files import ModelFileError
from drpo.checkpoints.store import RunStore, StoreError
from drpo.cli.common import fail
from drpo.cli.options import (
    AuthTokenEnvOption,
    BaseApiKeyEnvOption,
    BaseEndpointOption,
    BaseModelOption,
    BaseModelPathOption,
    HostOption,
    LogLevelOption,
    MaxBodyBytesOption,
    PortOption,
    ServeConcurrencyOption,
    ServedModelNameOption,
    ServedPromptFileOption,
    StoreOption,
)
from drpo.graph.api import RunError
from drpo.graph.inference import AlignedPrompt, PromptFileError
from drpo.serve.app import (
    DEFAULT_MAX_BODY_BYTES,
    UpstreamConfig,
    bind_socket,
    create_app,
    socket_url,
    uvicorn_config,
)
from drpo.state.settings import (
    DEFAULT_STORE,
    ConfigError,
    RoleSettings,
    Settings,
    format_validation_error,
    settings_from_stored,
)

err = Console(stderr=True)
out = Console()


class ServeError(ValueError):
    """A user-fixable problem with the `drpo serve` arguments; the message is one line."""


# Errors whose message is already one line written for the user.
_USER_ERRORS = (
    ServeError,
    ConfigError,
    PromptFileError,
    RunError,
    StoreError,
    CredentialError,
    ModelFileError,
    EmbeddedServerError,
)


def load_served_prompt(
    run_id: str | None, prompt_file: Path | None, store: Path
) -> tuple[AlignedPrompt, Settings, str]:
    """The aligned prompt, the settings it was optimized with, and the default served name."""
    if (run_id is None) == (prompt_file is None):
        raise ServeError("give a run id or --prompt-file (exactly one)")
    if prompt_file is not None:
        aligned = AlignedPrompt.from_file(prompt_file)
        record = json.loads(prompt_file.read_text(encoding="utf-8"))
        stored: dict[str, Any] = record.get("settings") or {}
        name = f"drpo-{record['run_id']}" if record.get("run_id") else "drpo"
        return aligned, settings_from_stored(stored), name
    assert run_id is not None
    if not store.exists():
        raise ServeError(f"run store not found: {store}")
    db = RunStore(store)
    try:
        row = db.run(run_id)
        if row is None:
            raise ServeError(f"no run {run_id!r} in {store}")
        aligned = AlignedPrompt.from_run(db, run_id)
        settings = settings_from_stored(json.loads(row["settings"]))
    finally:
        db.close()
    return aligned, settings, f"drpo-{run_id}"


def base_role(
    settings: Settings,
    *,
    endpoint: str | None,
    model: str | None,
    api_key_env: str | None,
    model_path: Path | None,
) -> RoleSettings:
    """The run's base-model settings with the command line's overrides applied (validated)."""
    updates: dict[str, Any] = {
        key: value
        for key, value in {
            "endpoint": endpoint,
            "model": model,
            "api_key_env": api_key_env,
            "model_path": model_path,
        }.items()
        if value is not None
    }
    try:
        return RoleSettings.model_validate({**settings.base.model_dump(), **updates})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def _print_usage(
    url: str, served: str, aligned: AlignedPrompt, base: str, token_env: str | None
) -> None:
    """Say where the server is and how to call it."""
    out.print(
        f"serving [bold]{served}[/] ({aligned.mode} mode, top {aligned.top_k} of "
        f"{len(aligned.examples)} examples per query; base model: {base}) at [bold]{url}[/]. "
        "Ctrl-C stops it.",
        highlight=False,
        soft_wrap=True,
    )
    key = f'os.environ["{token_env}"]' if token_env else '"unused"'
    if aligned.mode == "chat":
        call = (
            f'client.chat.completions.create(model="{served}", '
            'messages=[{"role": "user", "content": "Hello!"}])'
        )
        show = "reply.choices[0].message.content"
    else:
        call = f'client.completions.create(model="{served}", prompt="Hello!")'
        show = "reply.choices[0].text"
    snippet = (
        ("\n  import os" if token_env else "")
        + "\n  from openai import OpenAI\n"
        + f'  client = OpenAI(base_url="{url}", api_key={key})\n'
        + f"  reply = {call}\n"
        + f"  print({show})\n"
    )
    out.print(snippet, highlight=False, markup=False, soft_wrap=True)


def serve_command(
    run_id: Annotated[str | None, typer.Argument(help="the run whose best prompt to serve")] = None,
    prompt_file: ServedPromptFileOption = None,
    store: StoreOption = DEFAULT_STORE,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    auth_token_env: AuthTokenEnvOption = None,
    max_concurrency: ServeConcurrencyOption = None,
    max_body_bytes: MaxBodyBytesOption = DEFAULT_MAX_BODY_BYTES,
    served_model_name: ServedModelNameOption = None,
    endpoint: BaseEndpointOption = None,
    model: BaseModelOption = None,
    api_key_env: BaseApiKeyEnvOption = None,
    model_path: BaseModelPathOption = None,
    log_level: LogLevelOption = "info",
) -> None:
    """Serve the aligned model as an OpenAI-compatible endpoint (chat and completions)."""
    with contextlib.ExitStack() as stack:
        try:
            aligned, settings, default_name = load_served_prompt(run_id, prompt_file, store)
            base = base_role(
                settings,
                endpoint=endpoint,
                model=model,
                api_key_env=api_key_env,
                model_path=model_path,
            )
            token = _auth_token(auth_token_env)
            served = served_model_name or default_name
            slots = max_concurrency or _default_concurrency(settings, base)
            # A remote endpoint's missing key is reported before anything starts.
            upstream = None if base.is_embedded else UpstreamConfig.from_role(base)
            sock = bind_socket(host, port)
            stack.callback(sock.close)
            upstream, base_name = _upstream(stack, settings, base, upstream)
            app = create_app(
                aligned,
                upstream,
                auth_token=token,
                max_concurrency=slots,
                max_body_bytes=max_body_bytes,
                served_model=served,
            )
        except _USER_ERRORS as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        url = socket_url(sock)
        if token is None and host not in ("127.0.0.1", "localhost", "::1"):
            err.print(
                f"warning: listening on {host} without --auth-token-env: anyone who can reach "
                "this port can use the model",
                highlight=False,
            )
        _print_usage(url, served, aligned, base_name, auth_token_env)
        _run_until_stopped(app, sock, log_level)


def _auth_token(env: str | None) -> str | None:
    """The bearer token clients must send, read from the variable named `env` (None: no auth)."""
    if env is None:
        return None
    token = os.environ.get(env)
    if not token:
        raise ServeError(f"environment variable {env} is not set")
    return token


def _default_concurrency(settings: Settings, base: RoleSettings) -> int:
    """Requests in flight to the base model when --max-concurrency is not given: as many as the
    embedded server takes in parallel (its slots), else as many as the run itself sent at once."""
    return settings.embedded_slots if base.is_embedded else settings.max_concurrency


def _upstream(
    stack: contextlib.ExitStack,
    settings: Settings,
    base: RoleSettings,
    upstream: UpstreamConfig | None,
) -> tuple[UpstreamConfig, str]:
    """The base model to forward to (starting the embedded one when `upstream` is None), named."""
    if upstream is not None:
        return upstream, f"{base.model} at {base.endpoint}"
    pool = stack.enter_context(EmbeddedServerPool.from_settings(settings))
    with err.status(f"starting the embedded model {base.model_path or base.model} …"):
        upstream = UpstreamConfig.from_role(base, base_url=pool.url_for_role(base))
    return upstream, f"embedded {base.model_path or base.model}"


def _run_until_stopped(app: Any, sock: socket.socket, log_level: str) -> None:
    """Serve on the bound socket until Ctrl-C; fail when uvicorn never started."""
    server = uvicorn.Server(uvicorn_config(app, log_level=log_level))
    interrupted = False
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it handled; it is how this command is meant to end.
        interrupted = True
    if not (server.started or interrupted):
        raise fail("the server did not start (see the log above)")
    err.print("stopped", highlight=False)
