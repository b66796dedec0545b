"""Fitting the default search to the measured speed: the ladder, who is cut, what is said."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drpo.backends.speed_probe import ServerSpeed
from drpo.checkpoints.store import RunStore
from drpo.cli.app import app
from drpo.cli.progress import adaptation_text
from drpo.graph.api import adapt_to_speed, load_run_data, with_metric
from drpo.nodes.adapt import AIM_SHARE, LADDER, fit_to_speed, why_not_adapted
from drpo.nodes.estimate import Estimate, RoleEstimate, estimate_run
from drpo.nodes.eta import PRIOR_CACHED, PRIOR_FILL, RunClock
from drpo.prompts.rubric import BUILTIN_RUBRIC
from drpo.state.events import RunWarning, SpeedMeasured
from drpo.state.settings import Settings, deep_merge, load_settings, settings_from_stored

SLOW = ServerSpeed(18.0, 5.2)


def _default(**overrides: Any) -> Settings:
    return load_settings(overrides=overrides, environ={})


def _expected(settings: Settings, speed: ServerSpeed) -> float:
    return RunClock.expected_before_start(estimate_run(settings, load_run_data(settings)), speed)


def _rungs(settings: Settings, count: int) -> Settings:
    """The settings with the ladder's first `count` rungs applied, each as it says."""
    values = settings.public_dict()
    for rung in LADDER[:count]:
        section, name = rung.setting.split(".")
        values = deep_merge(values, {section: {name: rung.value}})
    return settings_from_stored(values)


def test_the_expected_time_takes_the_stored_runs_fill_and_cache_hits_not_the_bounds() -> None:
    estimate = Estimate()
    estimate.roles["judge"] = RoleEstimate(10, 7000, 800)
    speed = ServerSpeed(20.0, 8.0)
    per_call = 700 * (1 - PRIOR_CACHED["judge"]) / 20 + PRIOR_FILL["judge"] * 80 / 8
    assert RunClock.expected_before_start(estimate, speed) == pytest.approx(10 * per_call)
    assert RunClock.before_start(estimate, speed) == pytest.approx(10 * (700 / 20 + 80 / 8))


@pytest.mark.parametrize("rungs", range(1, len(LADDER) + 1))
def test_the_ladder_stops_at_the_first_rung_whose_search_fits(rungs: int) -> None:
    default = _default()
    before, after = (_expected(_rungs(default, n), SLOW) for n in (rungs - 1, rungs))
    assert after < before  # every rung saves time
    aim = (before + after) / 2  # between them: this rung fits, the one before does not
    settings = _default(time_target_minutes=aim / AIM_SHARE / 60)
    adaptation = fit_to_speed(settings, load_run_data(settings), SLOW)
    assert adaptation.fits and adaptation.adapted_seconds == pytest.approx(after)
    assert adaptation.expected_seconds == pytest.approx(_expected(default, SLOW))
    assert adaptation.settings.public_dict() == _rungs(settings, rungs).public_dict()
    assert (
        adaptation.estimate.calls
        == estimate_run(adaptation.settings, load_run_data(settings)).calls
    )
    # One change per setting lowered, from the default's value to the last rung's.
    lowered = {rung.setting: rung.value for rung in LADDER[:rungs]}
    assert {(c.setting, c.after) for c in adaptation.changes} == set(lowered.items())
    assert all(
        c.before == getattr(getattr(default, c.setting.split(".")[0]), c.setting.split(".")[1])
        for c in adaptation.changes
    )


def test_a_search_expected_just_within_the_target_is_still_cut_to_the_margin_below_it() -> None:
    # Runs have taken up to a quarter longer than expected: one expected at 90 % of the target
    # would likely end after it.
    expected = _expected(_default(), SLOW)
    settings = _default(time_target_minutes=expected / 0.9 / 60)
    adaptation = fit_to_speed(settings, load_run_data(settings), SLOW)
    assert adaptation.changes and adaptation.fits
    assert adaptation.adapted_seconds <= AIM_SHARE * settings.time_target_minutes * 60
    assert adaptation.event().aim_seconds == pytest.approx(adaptation.aim_seconds)
    assert "as runs take up to a quarter longer than expected" in adaptation_text(
        adaptation.event()
    )
    margin = 1 / AIM_SHARE - 1  # how much longer than expected a run may take within the target
    assert margin == pytest.approx(0.25)  # what "a quarter" in the line says


def test_a_machine_fast_enough_changes_nothing() -> None:
    settings = _default()
    fast = ServerSpeed(500.0, 100.0)
    adaptation = fit_to_speed(settings, load_run_data(settings), fast)
    assert adaptation.changes == () and adaptation.settings is settings and adaptation.fits


def test_when_even_the_smallest_search_is_too_long_it_runs_and_says_so() -> None:
    settings = _default()
    crawl = ServerSpeed(2.0, 0.5)
    adaptation = fit_to_speed(settings, load_run_data(settings), crawl)
    assert not adaptation.fits
    assert adaptation.settings.public_dict() == _rungs(settings, len(LADDER)).public_dict()
    text = adaptation_text(adaptation.event())
    assert "even the smallest search is expected to take" in text and "running it" in text
    assert len(text.splitlines()) == 1 + len(adaptation.changes)


@pytest.mark.parametrize(
    ("loaded", "reason"),
    [
        ({"preset": "default"}, "preset was chosen"),
        ({"preset": "quick"}, "preset was chosen"),
        ({"overrides": {"search": {"depth": 2}}}, "search.depth was chosen"),
        ({"overrides": {"examples": {"enabled": False}}}, "examples.enabled was chosen"),
        ({"overrides": {"base": {"max_tokens": 256}}}, "base.max_tokens was chosen"),
        ({"environ": {"DRPO_SEARCH__WIDTH": "2"}}, "search.width was chosen"),
        ({"overrides": {"time_target_minutes": 0}}, "time_target_minutes is 0"),
        ({"overrides": {"judge": {"endpoint": "http://127.0.0.1:9/v1"}}}, "remote endpoint"),
        ({"overrides": {"base": {"model": "qwen2.5-coder-0.5b"}}}, None),
        ({"overrides": {"budget": {"calls": 9}, "time_target_minutes": 30}}, None),
    ],
)
def test_only_a_search_nobody_chose_is_cut(loaded: dict[str, Any], reason: str | None) -> None:
    settings = load_settings(
        preset=loaded.get("preset"),
        overrides=loaded.get("overrides"),
        environ=loaded.get("environ", {}),
    )
    why = why_not_adapted(settings)
    assert why is None if reason is None else reason in str(why)


def test_a_preset_named_in_the_config_file_counts_as_chosen(tmp_path: Path) -> None:
    config = tmp_path / "drpo.toml"
    config.write_text('preset = "default"\n', encoding="utf-8")
    assert why_not_adapted(load_settings(config, environ={})) == "preset was chosen"


def test_settings_built_without_load_settings_are_never_cut() -> None:
    assert "load_settings" in str(why_not_adapted(Settings()))


def test_a_metric_given_from_python_keeps_the_search_adaptable() -> None:
    settings, _ = with_metric(_default(), lambda query, answer, reference: 1.0)
    assert settings.rewards.metric_callable and why_not_adapted(settings) is None


def test_a_failed_probe_cuts_nothing_and_writes_nothing(tmp_path: Path) -> None:
    settings = _default(store=str(tmp_path / "runs.db"))
    store = RunStore(settings.store)
    try:
        store.create_run("r1", settings.public_dict(), [])
        measured = [
            SpeedMeasured(model="a.gguf", prefill_per_second=18.0, decode_per_second=5.2),
            RunWarning(message="no time estimate: the speed probe took over 10 s"),
        ]
        data = load_run_data(settings)
        kept, events = adapt_to_speed(settings, data, BUILTIN_RUBRIC, measured, store, "r1")
        assert kept is settings and events == []
        assert store.run("r1")["adapted"] is None  # type: ignore[index]
        # The same slow speed without the failure is cut, so the failure is what stopped it.
        cut, events = adapt_to_speed(settings, data, BUILTIN_RUBRIC, measured[:1], store, "r1")
        assert cut is not settings and len(events) == 1
    finally:
        store.close()


class _Pool:
    def __enter__(self) -> _Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def url_for_role(self, role: object) -> str:
        return "http://127.0.0.1:9/v1"


@pytest.fixture
def slow_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--estimate` on a machine probed at issue #16's EPYC speed, with no model started."""
    from drpo.backends import embedded, model_files, speed_probe

    monkeypatch.setattr(model_files, "status", lambda entry: "ready")
    monkeypatch.setattr(embedded.EmbeddedServerPool, "from_settings", lambda settings: _Pool())
    monkeypatch.setattr(speed_probe, "measure_server_speed", lambda root: SLOW)


@pytest.mark.usefixtures("slow_probe")
@pytest.mark.parametrize(
    ("flags", "adapted"),
    [
        ([], True),
        (["--no-adapt"], False),
        (["--preset", "default"], False),
        (["--depth", "2"], False),
    ],
)
def test_the_estimate_shows_the_same_decision_without_running(
    flags: list[str], adapted: bool
) -> None:
    result = CliRunner().invoke(app, ["optimize", "--estimate", *flags])
    assert result.exit_code == 0, result.output
    settings = _default()
    expected = fit_to_speed(settings, load_run_data(settings), SLOW)
    assert ("adapted to fit 20 min" in result.output) is adapted
    if adapted:
        for change in expected.changes:
            assert f"  {change.setting} {change.before}→{change.after}" in result.output
        assert f"at most {expected.estimate.calls} model calls" in result.output
    else:
        assert "that is over 20 min; faster choices" in result.output
