"""The run-bound ledger writes under its own run only, and a run's cost comes back typed."""

from __future__ import annotations

from pathlib import Path

from drpo.backends.llm import CachedReply, CallRecord
from drpo.checkpoints.store import RunStore
from drpo.state.types import Candidate, RunCost


def test_a_ledger_writes_under_its_run_and_leaves_other_runs_alone(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    store.create_run("r1", {}, [])
    store.create_run("r2", {}, [])
    ledger = store.for_run("r1")
    ledger.record_candidate(Candidate(id="c1", prompt="p"), 1, 3.5, survived=True)
    ledger.record_rejected(Candidate(id="c2", prompt="q"), 1, "fitted to one query")
    ledger.update_run(best_candidate_id="c1")
    ledger.record_decision("c1", "approve")
    kept, rejected = store.candidate("r1", "c1"), store.candidate("r1", "c2")
    assert kept is not None and kept["level_reward"] == 3.5 and kept["survived"] == 1
    assert rejected is not None and rejected["rejected"] == "fitted to one query"
    assert store.candidate("r2", "c1") is None
    assert store.run("r1")["best_candidate_id"] == "c1"  # type: ignore[index]
    assert store.run("r2")["best_candidate_id"] is None  # type: ignore[index]
    store.close()


def test_a_paid_reply_and_its_call_are_recorded_under_the_ledgers_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    ledger = store.for_run("r1")
    paid = CallRecord("judge", "m", "e", "ok", prompt_tokens=40, completion_tokens=7, latency=1.5)
    ledger.put("k", CachedReply(("yes",), 40, 7), paid)
    ledger.record_call(CallRecord("judge", "m", "e", "cache_hit", cache_key="k"))
    ledger.record_call(CallRecord("judge", "m", "e", "invalid", prompt_tokens=9))
    assert ledger.get("k") == CachedReply(("yes",), 40, 7)
    assert [c["outcome"] for c in store.calls("r1")] == ["ok", "cache_hit", "invalid"]
    assert store.calls("r2") == []
    cost = ledger.cost()
    assert cost == RunCost(
        calls=2, prompt_tokens=40, completion_tokens=7, seconds=1.5, cache_hits=1
    )
    assert cost.tokens == 47
    assert ledger.spent() == {"calls": 1, "tokens": 47}
    store.close()


def test_the_cost_of_a_run_without_calls_is_all_zero(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    assert store.run_cost("none") == RunCost()
    store.close()


def test_an_export_of_a_run_without_calls_counts_zero_cache_hits_not_null(tmp_path: Path) -> None:
    from drpo.graph.export import export_record
    from drpo.state.settings import load_settings

    store = RunStore(tmp_path / "runs.db")
    store.create_run("r1", load_settings().public_dict(), [])
    store.update_run("r1", final_prompt="Be careful.")
    cost = export_record(store, store.run("r1") or {})["cost"]
    assert cost == {
        "calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "seconds": 0.0,
        "cache_hits": 0,
    }
    assert cost["cache_hits"] is not None
    store.close()
