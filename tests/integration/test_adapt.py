"""The default search fitted to the speed measured at start: cut, stored, printed, kept on resume.

The embedded server is stood in for by the stub (the run's calls) and a llama.cpp-like
`/completion` endpoint whose timings say how fast the machine is (the start probe's).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_timings import LlamaTimingsServer
from scripted_llm import ScriptedLLM
from stub_server import StubServer
from typer.testing import CliRunner

from drpo.backends.embedded import EmbeddedServerPool
from drpo.backends.speed_probe import ServerSpeed
from drpo.checkpoints.store import RunStore
from drpo.cli.app import app
from drpo.cli.progress import ProgressPrinter
from drpo.graph.api import RunPaused, load_run_data, optimize, resume
from drpo.nodes.adapt import fit_to_speed
from drpo.state.events import LevelDone, RunEvent, SettingsAdapted, SpeedMeasured
from drpo.state.settings import Settings, load_settings, settings_from_stored

pytestmark = pytest.mark.integration

SLOW = ServerSpeed(18.0, 5.2)  # issue #16's EPYC: the default run is expected near 53 min
FAST = ServerSpeed(500.0, 100.0)


def _timed_at(speed: ServerSpeed) -> tuple[float, float]:
    """The /completion timings (60 prompt tokens, 8 decoded) of a server at this speed."""
    return 60_000 / speed.prefill_per_second, 8_000 / speed.decode_per_second


class _Server:
    def __init__(self, root_url: str) -> None:
        self.root_url = root_url
        self.threads = 2
        self.slots = 4
        self.threads_reason = "test"


class _Pool:
    """The embedded pool's surface open_run uses: the stub answers, `root` is probed."""

    def __init__(self, base_url: str, root: str) -> None:
        self.base_url = base_url
        self.servers = {Path("/models/qwen2.5-coder-1.5b.gguf"): _Server(root)}

    def url_for(self, model: object) -> str:
        return self.base_url

    def close(self) -> None:
        pass


@pytest.fixture
def machine(
    stub: StubServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[ServerSpeed], None]]:
    """Embedded roles served by the stub, on a machine whose speed the test sets."""
    with LlamaTimingsServer([_timed_at(FAST)]) as timings:
        monkeypatch.setattr(
            EmbeddedServerPool, "from_settings", lambda settings: _Pool(stub.base_url, timings.root)
        )
        stub.set_responder(ScriptedLLM())

        def set_speed(speed: ServerSpeed) -> None:
            timings.script = [_timed_at(speed)]

        yield set_speed


def default_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """The default search on the embedded model, as `drpo optimize` loads it."""
    places = {
        "store": str(tmp_path / "runs.db"),
        "checkpoints": str(tmp_path / "checkpoints.db"),
        "data": {"retrieval": "bm25"},
    }
    return load_settings(overrides={**places, **overrides}, environ={})


def stored(settings: Settings, run_id: str) -> dict[str, Any]:
    store = RunStore(settings.store)
    try:
        row = store.run(run_id)
    finally:
        store.close()
    assert row is not None
    return row


def test_a_slow_machine_runs_the_cut_search_and_stores_and_prints_what_it_changed(
    machine: Callable[[ServerSpeed], None],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    machine(SLOW)
    settings = default_settings(tmp_path)
    expected = fit_to_speed(settings, load_run_data(settings), SLOW)
    assert expected.changes  # the default search does not fit 20 min at this speed
    events: list[RunEvent] = []
    with ProgressPrinter(settings.store, estimate=None) as printer:

        def both(event: RunEvent) -> None:
            events.append(event)
            printer(event)

        result = optimize(settings, on_event=both)
        # The progress counts against the adapted run's estimate.
        counted = printer.clock.estimate.calls if printer.clock else None
    (adapted,) = [e for e in events if isinstance(e, SettingsAdapted)]
    assert adapted == expected.event()
    # The event comes before the probe's own, so the time printed is the adapted run's.
    kinds = [type(e) for e in events]
    assert kinds.index(SettingsAdapted) < kinds.index(SpeedMeasured)
    row = stored(settings, result.run_id)
    assert json.loads(row["settings"]) == expected.settings.public_dict()
    assert SettingsAdapted.model_validate_json(row["adapted"]) == adapted
    # The run did what the adapted settings say: its levels and its estimate's calls.
    levels = [e.level for e in events if isinstance(e, LevelDone)]
    assert levels == list(range(expected.settings.search.depth + 1))
    assert counted == expected.estimate.calls
    shown = CliRunner().invoke(app, ["show", result.run_id, "--store", str(settings.store)])
    changes = ", ".join(f"{c.setting} {c.before}→{c.after}" for c in adapted.changes)
    assert f"adapted to this machine's speed: {changes}" in shown.output
    err = capsys.readouterr().err
    assert "expected at the default settings on this machine (18 tok/s prefill" in err
    assert "adapted to fit 20 min (cut to 16 min expected, as runs take up to" in err
    for change in adapted.changes:
        assert f"\n  {change.setting} {change.before}→{change.after}\n" in err


def test_a_fast_machine_runs_the_default_search_unchanged(
    machine: Callable[[ServerSpeed], None], tmp_path: Path
) -> None:
    machine(FAST)
    settings = default_settings(tmp_path)
    events: list[RunEvent] = []
    result = optimize(settings, on_event=events.append)
    assert any(isinstance(e, SpeedMeasured) for e in events)
    assert not any(isinstance(e, SettingsAdapted) for e in events)
    row = stored(settings, result.run_id)
    assert json.loads(row["settings"]) == settings.public_dict()
    assert row["adapted"] is None


@pytest.mark.parametrize(
    "chosen",
    [
        {"preset": "default"},
        {"overrides": {"search": {"depth": 2}}},
        {"overrides": {"time_target_minutes": 0}},  # what --no-adapt sets
    ],
    ids=["--preset default", "--set search.depth=2", "--no-adapt"],
)
def test_a_search_the_user_chose_runs_as_chosen_on_a_slow_machine(
    machine: Callable[[ServerSpeed], None], tmp_path: Path, chosen: dict[str, Any]
) -> None:
    machine(SLOW)
    places = {
        "store": str(tmp_path / "runs.db"),
        "checkpoints": str(tmp_path / "checkpoints.db"),
        "data": {"retrieval": "bm25"},
    }
    settings = load_settings(
        preset=chosen.get("preset"),
        overrides={**places, **chosen.get("overrides", {})},
        environ={},
    )
    events: list[RunEvent] = []
    result = optimize(settings, on_event=events.append)
    assert not any(isinstance(e, SettingsAdapted) for e in events)
    assert [e.level for e in events if isinstance(e, LevelDone)] == [0, 1, 2]
    assert json.loads(stored(settings, result.run_id)["settings"]) == settings.public_dict()


def test_a_resumed_adapted_run_keeps_its_adapted_settings_on_a_fast_machine(
    machine: Callable[[ServerSpeed], None], tmp_path: Path
) -> None:
    machine(SLOW)
    settings = default_settings(tmp_path, budget={"calls": 3})
    adapted = fit_to_speed(settings, load_run_data(settings), SLOW).settings
    with pytest.raises(RunPaused) as paused:
        optimize(settings)
    run_id = paused.value.run_id
    machine(FAST)  # the default search would now fit: the run must not grow back
    events: list[RunEvent] = []
    result = resume(
        run_id, store_path=settings.store, budget={"calls": None}, on_event=events.append
    )
    assert result.status == "completed"
    assert not any(isinstance(e, SettingsAdapted) for e in events)
    ran = settings_from_stored(json.loads(stored(settings, run_id)["settings"]))
    assert ran.search == adapted.search and ran.examples == adapted.examples
    levels = [e.level for e in events if isinstance(e, LevelDone)]
    assert levels and max(levels) == adapted.search.depth
