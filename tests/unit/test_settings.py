"""Tests for run settings: layer precedence, presets, role defaults and one-line config errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from drpo.state.settings import PRESETS, ConfigError, load_settings


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "drpo.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


# Precedence: defaults < preset < TOML file < environment < overrides


def test_builtin_defaults_apply_without_any_layer() -> None:
    settings = load_settings(environ={})
    assert settings.preset == "default"
    assert settings.seed == 0
    assert settings.max_concurrency == 4
    assert settings.search.skip_threshold == 5.0  # the default preset turns the skip rule off
    assert settings.search.dedupe is True
    assert settings.search.final == "best_validated"


def test_preset_overrides_builtin_defaults() -> None:
    # The built-in SearchSettings default depth is 3; the "default" preset sets 2.
    assert load_settings(environ={}).search.depth == 2


def test_file_overrides_preset(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[search]\ndepth = 7\n")
    settings = load_settings(config_file=config, preset="paper", environ={})
    assert settings.search.depth == 7
    # Untouched preset values survive the file layer.
    assert settings.search.actions == 3


def test_environment_overrides_file(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[search]\nwidth = 5\ndepth = 7\n")
    settings = load_settings(config_file=config, environ={"DRPO_SEARCH__WIDTH": "3"})
    assert settings.search.width == 3
    assert settings.search.depth == 7


def test_overrides_win_over_environment_and_file(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[search]\nwidth = 5\n")
    settings = load_settings(
        config_file=config,
        overrides={"search": {"width": 7}},
        environ={"DRPO_SEARCH__WIDTH": "3"},
    )
    assert settings.search.width == 7


def test_environ_argument_is_used_instead_of_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DRPO_SEARCH__WIDTH", "9")
    assert load_settings(environ={}).search.width == 2
    assert load_settings(environ={"DRPO_SEARCH__WIDTH": "4"}).search.width == 4


def test_process_environment_is_read_when_environ_is_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [k for k in os.environ if k.upper().startswith("DRPO_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DRPO_SEARCH__WIDTH", "6")
    assert load_settings().search.width == 6


def test_preset_can_be_chosen_by_file_and_argument_wins(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'preset = "paper"\n')
    assert load_settings(config_file=config, environ={}).preset == "paper"
    assert load_settings(config_file=config, preset="quick", environ={}).preset == "quick"


def test_preset_from_environment_wins_over_file(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'preset = "paper"\n')
    settings = load_settings(config_file=config, environ={"DRPO_PRESET": "quick"})
    assert settings.preset == "quick"
    assert settings.search.depth == 1


# Presets


def test_default_preset_values() -> None:
    settings = load_settings(preset="default", environ={})
    assert (settings.search.width, settings.search.actions, settings.search.depth) == (2, 2, 2)
    assert settings.search.batch_size == 1
    assert settings.search.validation_size == 2
    assert settings.search.skip_threshold == 5.0
    assert settings.examples.rounds == 1
    assert settings.examples.limit == 4
    assert settings.base.max_tokens == 256


def test_quick_preset_values() -> None:
    settings = load_settings(preset="quick", environ={})
    assert (settings.search.width, settings.search.actions, settings.search.depth) == (2, 2, 1)
    assert settings.search.batch_size == 1
    assert settings.search.validation_size == 2
    assert settings.base.max_tokens == 200
    assert settings.examples.limit == 2


def test_paper_preset_reproduces_the_released_schedule() -> None:
    settings = load_settings(preset="paper", environ={})
    search = settings.search
    assert search.width == 2
    assert search.actions == 3
    assert search.depth == 20
    assert search.batch_size == 1
    assert search.skip_threshold == 4.5
    assert search.max_extension == 10
    assert search.final == "last_on_best_path"
    assert search.dedupe is False
    assert settings.base.max_tokens == 2048
    assert settings.optimizer.temperature == 0.2
    assert settings.optimizer.top_p == 0.95
    assert settings.examples.rounds == 5
    assert settings.examples.limit is None
    assert settings.data.top_k == 2


def test_every_preset_loads() -> None:
    for name in PRESETS:
        assert load_settings(preset=name, environ={}).preset == name


# Role-specific defaults


def test_role_defaults_differ_per_role() -> None:
    settings = load_settings(environ={})
    assert settings.optimizer.temperature == 0.2
    assert settings.optimizer.top_p == 0.95
    assert settings.judge.temperature == 0.0
    assert settings.selector.max_tokens == 320
    assert settings.judge.max_tokens == 400


def test_role_defaults_survive_a_partial_override() -> None:
    settings = load_settings(overrides={"optimizer": {"max_tokens": 99}}, environ={})
    assert settings.optimizer.max_tokens == 99
    assert settings.optimizer.temperature == 0.2
    assert settings.optimizer.top_p == 0.95


def test_role_defaults_survive_a_partial_file_table(tmp_path: Path) -> None:
    config = _toml(tmp_path, '[optimizer]\nendpoint = "http://localhost:9000/v1/"\n')
    settings = load_settings(config_file=config, environ={})
    assert settings.optimizer.endpoint == "http://localhost:9000/v1"
    assert settings.optimizer.temperature == 0.2
    assert settings.optimizer.max_tokens == 800


def test_role_defaults_survive_a_partial_environment_override() -> None:
    settings = load_settings(environ={"DRPO_JUDGE__MAX_TOKENS": "50"})
    assert settings.judge.max_tokens == 50
    assert settings.optimizer.temperature == 0.2
    assert settings.selector.max_tokens == 320


# One-line ConfigError messages


def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[search\nwidth = 3\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(config_file=config, environ={})
    message = _one_line(exc)
    assert str(config) in message
    assert "TOML" in message


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as exc:
        load_settings(config_file=missing, environ={})
    message = _one_line(exc)
    assert "not found" in message
    assert str(missing) in message


def test_unknown_preset() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(preset="turbo", environ={})
    message = _one_line(exc)
    assert "turbo" in message
    assert "paper" in message


def test_unknown_field_in_file_is_named(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[search]\nwidht = 3\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(config_file=config, environ={})
    assert "search.widht" in _one_line(exc)


def test_unknown_role_field_is_named(tmp_path: Path) -> None:
    config = _toml(tmp_path, "[optimizer]\ntemp = 0.7\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(config_file=config, environ={})
    assert "optimizer.temp" in _one_line(exc)


def test_bad_endpoint_url() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(overrides={"judge": {"endpoint": "ftp://example.org"}}, environ={})
    message = _one_line(exc)
    assert "judge.endpoint" in message
    assert "ftp://example.org" in message


def test_wrong_type() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(overrides={"search": {"width": "wide"}}, environ={})
    message = _one_line(exc)
    assert "search.width" in message
    assert "integer" in message


def test_out_of_range_value() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(overrides={"search": {"width": 0}}, environ={})
    assert "search.width" in _one_line(exc)


def test_unrelated_drpo_variables_are_not_settings() -> None:
    # DRPO_CACHE_DIR or a user's DRPO_API_KEY are not settings and must not be rejected.
    settings = load_settings(environ={"DRPO_API_KEY": "x", "DRPO_CACHE_DIR": "/tmp"})
    assert settings.preset == "default"


def test_unknown_nested_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(environ={"DRPO_SEARCH__WIDHT": "3"})
    assert "search.widht" in _one_line(exc)


def test_unrelated_environment_variables_are_ignored() -> None:
    settings = load_settings(environ={"PATH": "/bin", "OTHER_SEARCH__WIDTH": "9"})
    assert settings.search.width == 2


def test_min_aspects_above_max_is_rejected() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(overrides={"rewards": {"min_aspects": 4, "max_aspects": 3}}, environ={})
    assert "min_aspects" in _one_line(exc)


# Stored settings carry no secret


def test_public_dict_holds_no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-SECRET"
    monkeypatch.setenv("MY_KEY", secret)
    settings = load_settings(
        overrides={"judge": {"endpoint": "https://api.example.org/v1", "api_key_env": "MY_KEY"}},
        environ={"MY_KEY": secret},
    )
    public = settings.public_dict()
    dumped = json.dumps(public)
    assert secret not in dumped
    assert public["judge"]["api_key_env"] == "MY_KEY"
    assert public["judge"]["endpoint"] == "https://api.example.org/v1"


def test_optimizer_default_fits_a_full_length_proposal() -> None:
    # ~3 characters per token for English JSON: a reply the schema allows must not be cut off
    # by max_tokens, or every attempt at it is paid for and then discarded as unparseable.
    from drpo.prompts.optimizer import PROMPT_MAX_CHARS, PromptProposal

    analysis_max = PromptProposal.model_fields["analysis"].metadata[0].max_length
    settings = load_settings(environ={})
    assert settings.optimizer.max_tokens * 3 >= PROMPT_MAX_CHARS + analysis_max + 40


# Replicas and budgets

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_vllm_example_config_loads_with_two_replicas_and_a_budget() -> None:
    settings = load_settings(EXAMPLES / "vllm.toml", environ={})
    assert [(r.url, r.max_concurrency) for r in settings.base.replicas] == [
        ("http://gpu-a:8000/v1", 12),
        ("http://gpu-b:8000/v1", 12),
    ]
    assert settings.base.endpoint == "http://gpu-a:8000/v1" and not settings.base.is_embedded
    assert settings.budget.tokens == 5_000_000 and settings.budget.calls is None


@pytest.mark.parametrize(
    ("role", "message"),
    [
        ({"endpoints": [{"url": "gpu-a:8000"}]}, "base.endpoints.0.url"),
        ({"endpoints": [{"url": "http://a/v1"}, {"url": "http://a/v1/"}]}, "same URL twice"),
        (
            {"endpoint": "http://b/v1", "endpoints": [{"url": "http://a/v1"}]},
            "either endpoint or endpoints",
        ),
        ({"endpoints": [{"url": "http://a/v1", "max_concurrency": 0}]}, "max_concurrency"),
    ],
)
def test_bad_replica_lists_are_one_line_errors(role: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(overrides={"base": role}, environ={})
    assert message in _one_line(exc)


def test_budgets_must_be_positive() -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(overrides={"budget": {"calls": 0}}, environ={})
    assert "budget.calls" in _one_line(exc)
