from pathlib import Path

import pytest

from drpo.cli.progress import ProgressPrinter
from drpo.state.events import BeamEntry, LevelDone, RunStarted, StepFinished


def test_each_phase_is_announced_on_one_unwrapped_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    printer = ProgressPrinter(tmp_path / "absent.db", summary="preset default: " + "x" * 120)
    printer(RunStarted(run_id="r1", store="drpo-runs/runs.db"))
    for node in ("prepare", "optimize_example", "collect_examples", "start_level"):
        printer(StepFinished(node=node))
    beam = (
        BeamEntry(candidate_id="L1-" + "a" * 40, value=4.5),
        BeamEntry(candidate_id="L1-" + "b" * 40, value=4.0),
    )
    printer(LevelDone(level=1, depth_limit=2, children=4, unscored=1, beam=beam))
    printer(StepFinished(node="start_validation"))
    printer.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "preset default: " + "x" * 120
    assert "stage A: example 1 optimized" in lines[3]
    assert lines[5].startswith("  next level")
    assert "level 1/2: 4 candidates (1 unscored)" in lines[6] and "4.00] · " in lines[6]
    assert lines[7] == "validating the best prompts on held-out queries"


def test_eval_progress_off_a_terminal_prints_a_line_per_tenth(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from drpo.cli.evaluation import BarProgress

    progress = BarProgress()
    assert progress.lines  # pytest's captured stderr is not a terminal
    progress.phase("answering", 20)
    for _ in range(20):
        progress.advance("answering")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("answ")]
    assert lines == [f"answering: {n}/20" for n in (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20)]
