"""Run settings: per-role model endpoints, search parameters, presets, and how they are loaded.

Precedence, lowest to highest: built-in defaults < preset < TOML config file < environment
variables (``DRPO_…``, nested with ``__``, e.g. ``DRPO_SEARCH__WIDTH=3``) < command-line flags.
API keys are never settings: a role names the environment variable that holds its key.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

RoleName = Literal["base", "selector", "judge", "optimizer"]
ROLES: tuple[RoleName, ...] = ("base", "selector", "judge", "optimizer")
EMBEDDED = "embedded"
DEFAULT_EMBEDDED_MODEL = "qwen2.5-coder-1.5b"


METRIC_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
# Where runs are kept unless the settings or a --store flag say otherwise.
DEFAULT_STORE = Path("drpo-runs/runs.db")
DEFAULT_CHECKPOINTS = Path("drpo-runs/checkpoints.db")


class ConfigError(ValueError):
    """A setting, config file or flag is invalid; the message is one line for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


class ReplicaSettings(_Strict):
    """One replica of a role's model server (e.g. one vLLM instance)."""

    url: str = Field(description="OpenAI-compatible base URL of this replica")
    max_concurrency: int | None = Field(
        default=None, ge=1, le=1024, description="calls in flight on this replica at most"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


# The kinds of endpoint whose request rules drpo knows (see drpo.backends.providers).
Provider = Literal["auto", "openai", "azure", "vllm", "llamacpp", "ollama", "anthropic", "generic"]


class RoleSettings(_Strict):
    """One LLM role's endpoint and decoding settings."""

    endpoint: str = Field(
        default=EMBEDDED,
        description="OpenAI-compatible base URL, or 'embedded' for the local server",
    )
    model: str = Field(default=DEFAULT_EMBEDDED_MODEL, description="model name at the endpoint")
    model_path: Path | None = Field(
        default=None, description="a local GGUF file to serve instead of a catalogue model"
    )
    api_key_env: str | None = Field(
        default=None, description="name of the environment variable holding the API key"
    )
    mode: Literal["chat", "completion"] = "chat"
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=1, le=32768)
    seed: int | None = 0
    timeout: float = Field(default=600.0, gt=0, description="seconds per request")
    retries: int = Field(default=2, ge=0, le=20, description="retries of a failed request")
    provider: Provider = Field(
        default="auto",
        description="the kind of endpoint; 'auto' detects it (host name, /props, /version, "
        "/api/version); embedded is llamacpp",
    )
    structured_output: Literal["auto", "json_schema", "json_object", "prompt"] = Field(
        default="auto", description="how replies are constrained; 'auto' = the provider's best"
    )
    supports_n: bool | None = Field(
        default=None,
        description="the endpoint honours the 'n' parameter; unset = what the provider honours",
    )
    api_version: str | None = Field(
        default=None,
        description="Azure OpenAI's api-version, for its classic deployment URLs; endpoint is "
        "then the resource URL and model the deployment name",
    )
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = Field(
        default=None, description="for reasoning models (o-series, gpt-5 family)"
    )
    logprobs: bool = Field(
        default=True,
        description="ask for token logprobs where the role scores (the judge), for "
        "probability-weighted scores; false for an endpoint that rejects the parameter",
    )
    endpoints: list[ReplicaSettings] = Field(
        default_factory=list,
        description="several replicas serving the same model, instead of one endpoint",
    )

    @model_validator(mode="after")
    def _one_form_of_endpoint(self) -> RoleSettings:
        if not self.endpoints:
            return self
        urls = [r.url for r in self.endpoints]
        if len(set(urls)) != len(urls):
            raise ValueError("endpoints lists the same URL twice")
        if self.endpoint not in (EMBEDDED, urls[0]):
            raise ValueError("give either endpoint or endpoints, not both")
        # `endpoint` names the first replica, for what needs a single URL (drpo serve).
        self.__dict__["endpoint"] = urls[0]
        return self

    @property
    def replicas(self) -> list[ReplicaSettings]:
        """The servers to call (not for `embedded`, which drpo starts itself)."""
        return list(self.endpoints) or [ReplicaSettings(url=self.endpoint)]

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url_or_embedded(cls, value: str) -> str:
        if value != EMBEDDED and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be 'embedded' or an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @property
    def is_embedded(self) -> bool:
        """Whether the role uses drpo's embedded llama.cpp server."""
        return self.endpoint == EMBEDDED


class SearchSettings(_Strict):
    """Stage B: the beam search over system prompts."""

    width: int = Field(default=2, ge=1, le=16)
    actions: int = Field(default=3, ge=1, le=16, description="candidate prompts per expansion")
    depth: int = Field(default=3, ge=0, le=200)
    max_extension: int = Field(
        default=10, ge=0, description="extra levels granted by the skip rule"
    )
    skip_threshold: float = Field(
        default=4.5,
        ge=1.0,
        le=5.0,
        description="skip rule: carry prompts scoring above this; 5 = off",
    )
    batch_size: int = Field(default=2, ge=1, le=64, description="training queries per level")
    history: int = Field(
        default=5, ge=0, le=20, description="prompt versions shown to the optimizer"
    )
    feedback_queries: int = Field(
        default=3,
        ge=1,
        le=16,
        description="answers (weakest first) the optimizer sees per rewrite",
    )
    max_topic_overlap: float = Field(
        default=0.34,
        ge=0.0,
        le=1.0,
        description="reject a rewrite adding this share of a query's content words; 1 = off",
    )
    max_bullets: int = Field(default=8, ge=1)
    max_new_bullets: int = Field(default=2, ge=1)
    dedupe: bool = True
    final: Literal["best_validated", "last_on_best_path"] = "best_validated"
    validation_size: int = Field(
        default=4, ge=0, description="validation queries for the final pick"
    )
    finalists: int = Field(default=2, ge=1, description="best candidates re-scored on validation")
    initial_prompt: str = "You are a helpful assistant."


class ExampleSettings(_Strict):
    """Stage A: optimizing the in-context examples."""

    enabled: bool = True
    rounds: int = Field(default=5, ge=0, le=50)
    beam_width: int = Field(default=1, ge=1, le=8)
    limit: int | None = Field(default=None, ge=1, description="optimize only the first N examples")


class RewardSettings(_Strict):
    """How rewards are built: aspect counts, new aspects, weights and the metric."""

    min_aspects: int = Field(default=2, ge=1)
    max_aspects: int = Field(default=5, ge=1)
    allow_new_aspects: bool = True
    rubric: Path | None = Field(
        default=None, description="a rubric file (TOML or JSON) replacing or extending the aspects"
    )
    llm_aspects: bool = Field(
        default=True, description="judge answers with LLM aspects; false: the metric alone"
    )
    metric: str | None = Field(
        default=None, description="a programmatic metric as 'module:function'"
    )
    metric_weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    # Set by the Python API for a metric callable that cannot be re-imported: a resumed run
    # must be given the callable again, and says so.
    metric_callable: str | None = None

    @field_validator("metric")
    @classmethod
    def _import_path(cls, value: str | None) -> str | None:
        if value is not None and not METRIC_PATH.fullmatch(value):
            raise ValueError(f"must be 'module:function', got {value!r}")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> RewardSettings:
        if self.min_aspects > self.max_aspects:
            raise ValueError("min_aspects must not exceed max_aspects")
        return self


class ReviewSettings(_Strict):
    """When a person approves prompt edits (human in the loop)."""

    policy: Literal["none", "final", "every", "threshold"] = "none"
    change_threshold: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="'threshold' asks when an edit changes more than this fraction of the prompt",
    )


class DataSettings(_Strict):
    """Where the examples and queries come from; None means the seed data shipped with drpo."""

    examples: Path | None = None
    train: Path | None = None
    validation: Path | None = None
    top_k: int = Field(default=2, ge=0, le=16, description="examples retrieved per query")
    retrieval: Literal["auto", "embeddings", "bm25"] = "auto"
    train_limit: int | None = Field(default=None, ge=1)


class CheckpointSettings(_Strict):
    """Where LangGraph's checkpoints go: the SQLite file `checkpoints`, or a Postgres database."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    url: str | None = Field(
        default=None, description="postgresql://user@host:port/database, without a password"
    )
    password_env: str | None = Field(
        default=None, description="name of the environment variable holding the password"
    )

    @field_validator("url")
    @classmethod
    def _no_password_in_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parsed = urlsplit(value)
        if parsed.scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a postgresql:// URL")
        if parsed.password is not None or "password=" in parsed.query.lower():
            # A password here would be stored with the run's settings: it must come from the
            # environment instead.
            raise ValueError("must not contain a password: name its variable in password_env")
        return value

    @model_validator(mode="after")
    def _url_for_postgres(self) -> CheckpointSettings:
        if self.backend == "postgres" and self.url is None:
            raise ValueError("backend 'postgres' needs checkpoint.url")
        return self


class BudgetSettings(_Strict):
    """Limits that pause a run (resumable with a larger budget); None means no limit."""

    tokens: int | None = Field(default=None, ge=1, description="paid prompt + completion tokens")
    calls: int | None = Field(default=None, ge=1, description="paid model calls")
    wall_seconds: float | None = Field(
        default=None, gt=0, description="time spent running, summed over resumes"
    )


class Settings(BaseSettings):
    """Everything a run needs. Stored with the run (without secrets) so it can be resumed."""

    model_config = SettingsConfigDict(
        env_prefix="DRPO_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    preset: str = "default"
    seed: int = 0
    store: Path = Field(default=DEFAULT_STORE, description="run store database")
    checkpoints: Path = Field(default=DEFAULT_CHECKPOINTS)
    max_concurrency: int = Field(default=4, ge=1, le=256, description="parallel LLM calls")
    cache: bool = Field(default=True, description="reuse stored replies of identical calls")
    embedded_slots: int = Field(default=4, ge=1, le=64)
    embedded_ctx: int = Field(default=8192, ge=512)
    embedded_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="llama.cpp CPU threads (unset: the cores no other program is using)",
    )
    embedded_pin_slots: bool = Field(
        default=False,
        description="send calls that share a system prompt to the same llama.cpp slot",
    )
    time_target_minutes: float = Field(
        default=20.0,
        ge=0,
        allow_inf_nan=False,
        description="the default search on the embedded server is cut to be expected within "
        "this many minutes at the speed measured at start; 0 = never adapt",
    )
    base: RoleSettings = RoleSettings(max_tokens=384)
    selector: RoleSettings = RoleSettings(max_tokens=320)
    judge: RoleSettings = RoleSettings(max_tokens=400)
    # A full-length PromptProposal (analysis + a prompt of up to PROMPT_MAX_CHARS) needs ~650
    # tokens; a reply cut off at max_tokens is unparseable and every retry of it is wasted.
    optimizer: RoleSettings = RoleSettings(temperature=0.2, top_p=0.95, max_tokens=800)
    search: SearchSettings = SearchSettings()
    examples: ExampleSettings = ExampleSettings()
    rewards: RewardSettings = RewardSettings()
    data: DataSettings = DataSettings()
    review: ReviewSettings = ReviewSettings()
    budget: BudgetSettings = BudgetSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    # The settings the user gave, as load_settings saw them; None (built directly): unknown.
    _chosen: frozenset[str] | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read settings only from the init kwargs that load_settings merges."""
        # Layers (preset, file) are merged into the init kwargs by load_settings; environment
        # variables are applied there too so that flags can still win over them.
        return (init_settings,)

    def role(self, name: RoleName) -> RoleSettings:
        """One role's settings by name."""
        role: RoleSettings = getattr(self, name)
        return role

    @property
    def chosen(self) -> frozenset[str] | None:
        """The settings the user gave in a config file, the environment or flags, as dotted
        names (`search.depth`; `preset` when one was named), recorded by `load_settings`;
        None for settings built otherwise, whose every value counts as chosen."""
        return self._chosen

    def with_chosen(self, chosen: frozenset[str] | None) -> Settings:
        """These settings, recording `chosen` as what the user gave."""
        copied = self.model_copy()
        copied._chosen = chosen
        return copied

    def public_dict(self) -> dict[str, Any]:
        """The settings as stored with a run: plain JSON values, no secret (keys are never here)."""
        return self.model_dump(mode="json")


PRESETS: dict[str, dict[str, Any]] = {
    # Sized for the embedded 1.5B model on 2 cores (a whole run within 20 minutes).
    # Its judge rates nearly every answer 5, so the skip rule would carry the starting prompt
    # forward level after level: it is off here (threshold 5) and on in `paper`.
    "default": {
        "base": {"max_tokens": 256},
        "search": {
            "width": 2,
            "actions": 2,
            "depth": 2,
            "batch_size": 1,
            "validation_size": 2,
            "skip_threshold": 5.0,
        },
        "examples": {"rounds": 1, "limit": 4},
    },
    # The released code's schedule: one query per level, last prompt on the best path.
    "paper": {
        "base": {"max_tokens": 2048},
        "optimizer": {"temperature": 0.2, "top_p": 0.95},
        "search": {
            "width": 2,
            "actions": 3,
            "depth": 20,
            "batch_size": 1,
            "max_extension": 10,
            "skip_threshold": 4.5,
            "dedupe": False,
            "final": "last_on_best_path",
            "feedback_queries": 1,
            "max_topic_overlap": 1.0,
            "validation_size": 0,
        },
        "examples": {"rounds": 5, "beam_width": 1, "limit": None},
        "data": {"top_k": 2},
    },
    # A few minutes on the embedded model: enough to see every stage work.
    "quick": {
        "base": {"max_tokens": 200},
        "search": {"width": 2, "actions": 2, "depth": 1, "batch_size": 1, "validation_size": 2},
        "examples": {"rounds": 1, "limit": 2},
    },
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge nested dicts; values in `override` win, sub-tables merge key by key."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_config_file(path: Path) -> dict[str, Any]:
    """A TOML config file as a dict; every way it can be unreadable is a ConfigError."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except PermissionError:
        raise ConfigError(f"config file not readable (permission denied): {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file is a directory: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    return data


def _environment_layer(environ: dict[str, str]) -> dict[str, Any]:
    """Parse DRPO_* variables with pydantic-settings' own env source (nesting, JSON values)."""
    source = EnvSettingsSource(
        Settings, env_prefix="DRPO_", env_nested_delimiter="__", case_sensitive=False
    )
    source.env_vars = {k.lower(): v for k, v in environ.items()}
    values: dict[str, Any] = source()
    # Only nested names (DRPO_SECTION__FIELD) are surely meant as settings; other DRPO_*
    # variables (DRPO_CACHE_DIR, a user's key variable) are not ours to reject.
    unknown = sorted(
        k
        for k in environ
        if k.upper().startswith("DRPO_")
        and "__" in k
        and k[5:].split("__")[0].lower() not in Settings.model_fields
    )
    if unknown:
        raise ConfigError(f"unknown setting in environment variable {unknown[0]}")
    return values


def format_validation_error(exc: ValidationError) -> str:
    """Render the first pydantic error as one line naming the setting."""
    first = exc.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"unknown setting '{location}'"
    return f"invalid setting '{location}': {first['msg']}"


def load_settings(
    config_file: Path | None = None,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build validated settings from defaults, preset, file, environment and flag overrides."""
    environ = dict(os.environ if environ is None else environ)
    overrides = overrides or {}
    file_layer = read_config_file(config_file) if config_file is not None else {}
    env_layer = _environment_layer(environ)
    chosen = preset or env_layer.get("preset") or file_layer.get("preset") or "default"
    if chosen not in PRESETS:
        raise ConfigError(f"unknown preset {chosen!r} (choose from {', '.join(PRESETS)})")
    layered: dict[str, Any] = {}
    for layer in (PRESETS[chosen], file_layer, env_layer, overrides):
        layered = deep_merge(layered, layer)
    layered["preset"] = chosen
    defaults = Settings().model_dump(exclude_unset=False)
    try:
        settings = Settings(**deep_merge(_role_defaults(defaults), layered))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    chosen = {name for layer in (file_layer, env_layer, overrides) for name in _dotted(layer)}
    if preset or "preset" in env_layer or "preset" in file_layer:
        chosen.add("preset")
    return settings.with_chosen(frozenset(chosen))


def _dotted(layer: dict[str, Any], prefix: str = "") -> set[str]:
    """The dotted names of a layer's values (`{"search": {"depth": 1}}` → `search.depth`)."""
    names: set[str] = set()
    for key, value in layer.items():
        name = f"{prefix}{key}"
        names |= _dotted(value, f"{name}.") if isinstance(value, dict) and value else {name}
    return names


def _role_defaults(defaults: dict[str, Any]) -> dict[str, Any]:
    # Nested models given as partial dicts replace their default wholesale in pydantic, so the
    # role-specific defaults (e.g. the optimizer's temperature) are merged in explicitly.
    return {
        key: defaults[key]
        for key in (
            *ROLES,
            "search",
            "examples",
            "rewards",
            "data",
            "review",
            "budget",
            "checkpoint",
        )
    }


def settings_from_stored(data: dict[str, Any]) -> Settings:
    """Rebuild the settings a run was started with (used by resume)."""
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(f"stored settings are invalid: {format_validation_error(exc)}") from None
