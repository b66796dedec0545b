"""Benchmarks of the search itself: schedule speed-up, orchestration overhead, checkpoint growth,
orchestrator memory, resume cost, and (with --embedded) efficiency against the model server.

    .venv/bin/python bench/search_bench.py               # stub-server figures (about a minute)
    .venv/bin/python bench/search_bench.py --embedded    # + efficiency and schedule on SmolLM2

Every ratio is measured side by side in one run, since these machines are noisy.
`--only schedule` (or overhead, rss, resume, embedded) runs one part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from scripted_llm import ScriptedLLM  # noqa: E402
from stub_server import StubProcess, StubServer  # noqa: E402

from drpo.checkpoints.store import RunStore  # noqa: E402
from drpo.graph.api import optimize  # noqa: E402
from drpo.state.settings import ROLES, Settings, load_settings  # noqa: E402

SLOTS = 4  # the embedded server's default, and the default max_concurrency
SEARCH = {"width": 2, "actions": 3, "depth": 3, "batch_size": 2, "validation_size": 2}
SCRIPT = f"{ROOT / 'tests' / 'support' / 'scripted_llm.py'}:default()"


def stub_settings(url: str, folder: Path, **overrides: Any) -> Settings:
    roles = {role: {"endpoint": url, "model": "stub-model"} for role in ROLES}
    layer = {
        **roles,
        "store": str(folder / "runs.db"),
        "checkpoints": str(folder / "ck.db"),
        "data": {"retrieval": "bm25"},
        "search": SEARCH,
        "examples": {"rounds": 1, "limit": 4},
        "cache": False,
        **overrides,
    }
    return load_settings(overrides=layer, environ={})


def timed_run(settings: Settings) -> tuple[float, int]:
    started = time.perf_counter()
    result = optimize(settings)
    wall = time.perf_counter() - started
    calls = sum(1 for c in RunStore(settings.store).calls(result.run_id) if c["outcome"] == "ok")
    return wall, calls


def schedule_speedup(latency: float) -> dict[str, float]:
    """The released code's schedule (one call at a time) vs the default concurrency."""
    figures: dict[str, float] = {}
    with StubServer(ScriptedLLM(), latency=latency) as stub:
        for concurrency in (1, 4):
            with tempfile.TemporaryDirectory() as tmp:
                wall, calls = timed_run(
                    stub_settings(stub.base_url, Path(tmp), max_concurrency=concurrency)
                )
            figures[f"wall_c{concurrency}"] = wall
            figures["calls"] = calls
        figures["peak_concurrency"] = stub.peak_concurrency
    figures["speedup"] = figures["wall_c1"] / figures["wall_c4"]
    return figures


def overhead_and_growth() -> dict[str, Any]:
    """Per-call orchestration cost on a zero-latency stub; checkpoint size against depth."""
    figures: dict[str, Any] = {"checkpoint_bytes": {}}
    with StubServer(ScriptedLLM(), latency=0.0) as stub:
        for depth in (2, 4, 8):
            with tempfile.TemporaryDirectory() as tmp:
                settings = stub_settings(
                    stub.base_url, Path(tmp), search={**SEARCH, "depth": depth}
                )
                stub.reset()
                wall, calls = timed_run(settings)
                figures.setdefault("per_call_ms", []).append(1000 * wall / max(calls, 1))
                size = sum(p.stat().st_size for p in Path(tmp).glob("ck.db*") if p.is_file())
                figures["checkpoint_bytes"][depth] = size
    sizes = figures["checkpoint_bytes"]
    figures["bytes_per_level"] = {
        "2→4": (sizes[4] - sizes[2]) / 2,
        "4→8": (sizes[8] - sizes[4]) / 4,
    }
    return figures


def _peak_rss_mb(pid: int) -> float:
    """The process's own peak RSS so far (VmHWM), 0 once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 1024


def orchestrator_rss(retrieval: str) -> dict[str, float]:
    """Peak RSS (MB) of a drpo process running a search against a stub server, and of the
    largest process it started (the embedding child, with embedding retrieval)."""
    with StubProcess(SCRIPT) as stub, tempfile.TemporaryDirectory() as tmp:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "drpo.cli.app",
                "optimize",
                "--endpoint",
                stub.base_url,
                "--model",
                "stub-model",
                "--store",
                f"{tmp}/r.db",
                "--checkpoints",
                f"{tmp}/c.db",
                "--depth",
                "3",
                "--set",
                f"data.retrieval={retrieval}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        peak = 0.0
        # VmHWM only grows, so the last reading before exit is the process's peak.
        while process.poll() is None:
            peak = max(peak, _peak_rss_mb(process.pid))
            time.sleep(0.05)
        if process.returncode != 0:
            raise RuntimeError(f"the {retrieval} search failed ({process.returncode})")
    # ru_maxrss of children is the largest waited-for descendant (KB on Linux).
    largest = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"orchestrator": peak, "largest_descendant": largest}


def resume_cost() -> dict[str, float]:
    """Kill a run mid-level with SIGKILL, resume it: calls re-issued and time to finish."""
    with StubProcess(SCRIPT, latency=0.1) as stub, tempfile.TemporaryDirectory() as tmp:
        args = [
            sys.executable,
            "-m",
            "drpo.cli.app",
            "optimize",
            "--endpoint",
            stub.base_url,
            "--model",
            "stub-model",
            "--store",
            f"{tmp}/r.db",
            "--checkpoints",
            f"{tmp}/c.db",
            "--depth",
            "3",
            "--set",
            "data.retrieval=bm25",
        ]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        run_id = ""
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
            if not (Path(tmp) / "r.db").exists():
                continue
            runs = RunStore(Path(tmp) / "r.db").runs()
            if runs and len(RunStore(Path(tmp) / "r.db").calls(runs[0]["id"])) >= 12:
                run_id = runs[0]["id"]
                break
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        store = RunStore(Path(tmp) / "r.db")
        run_id = run_id or store.runs()[0]["id"]
        done_before = len([c for c in store.calls(run_id) if c["outcome"] == "ok"])
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "drpo.cli.app", "resume", run_id, "--store", f"{tmp}/r.db"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        seconds = time.perf_counter() - started
        paid = [
            c["cache_key"]
            for c in RunStore(Path(tmp) / "r.db").calls(run_id)
            if c["outcome"] == "ok"
        ]
        return {
            "calls_before_kill": done_before,
            "reissued": len(paid) - len(set(paid)),
            "resume_seconds": seconds,
        }


async def _peak_throughput(url: str, prompt_tokens: int, completion_tokens: int) -> float:
    """Tokens the server processes per second with every slot busy, on requests shaped like
    the run's average call. Each prompt is new text: a repeated prompt would come from the
    server's prefix cache and inflate the peak (it doubled it when this bench reused prompts).
    The best of two rounds counts, which makes the lower bound smaller, the ratio larger."""
    import httpx

    words = "river stone cloud paper lamp garden music winter silver orange bridge".split()  # noqa: SIM905
    rng = random.Random(7)
    best = 0.0
    async with httpx.AsyncClient(timeout=600) as client:
        for _ in range(2):
            bodies = [
                {
                    "model": "local",
                    "max_tokens": completion_tokens,
                    "temperature": 0,
                    "ignore_eos": True,  # exactly the run's average completion length
                    "messages": [
                        {
                            "role": "user",
                            "content": " ".join(rng.choice(words) for _ in range(prompt_tokens)),
                        }
                    ],
                }
                for _ in range(SLOTS)
            ]
            started = time.perf_counter()
            replies = await asyncio.gather(
                *[client.post(f"{url}/chat/completions", json=body) for body in bodies]
            )
            seconds = time.perf_counter() - started
            usages = [reply.json()["usage"] for reply in replies]
            best = max(best, sum(_processed(usage) for usage in usages) / seconds)
    return best


def _processed(usage: dict[str, Any]) -> int:
    """Tokens the server had to compute: prompt tokens not taken from its cache, and output."""
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return int(usage["prompt_tokens"]) - int(cached) + int(usage["completion_tokens"])


def embedded_efficiency(model: str) -> dict[str, float]:
    """Wall time of a fixed search over the server-bound lower bound, measured in one run; then
    the same search one call at a time (the released code's schedule) on the same server.

    The bound is the tokens the server had to process (prompt tokens its prefix cache did not
    cover, plus completions) at the server's peak batched rate for calls of this run's shape."""
    from drpo.backends.embedded import EmbeddedServerPool

    with EmbeddedServerPool(slots=SLOTS, ctx=8192) as pool:
        url = pool.url_for(model)
        run = _embedded_search(model, SLOTS)
        calls = run["calls"]
        peak = asyncio.run(
            _peak_throughput(
                url,
                (run["prompt_tokens"] - run["cached_tokens"]) // calls,
                max(1, run["completion_tokens"] // calls),
            )
        )
        serial = _embedded_search(model, 1)
    bound = run["processed"] / peak
    return {
        **run,
        "peak_tok_s": peak,
        "lower_bound": bound,
        "ratio": run["wall"] / bound,
        "serial_wall": serial["wall"],
        "serial_calls": serial["calls"],
        "serial_processed": serial["processed"],
        "speedup": serial["wall"] / run["wall"],
        # The two runs' sampled replies differ, so also per token the server processed.
        "speedup_per_token": (serial["wall"] / serial["processed"])
        / (run["wall"] / run["processed"]),
    }


def _embedded_search(model: str, concurrency: int) -> dict[str, float]:
    roles = {role: {"model": model, "max_tokens": 160} for role in ROLES}
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            overrides={
                **roles,
                "store": f"{tmp}/r.db",
                "checkpoints": f"{tmp}/c.db",
                "cache": False,
                "max_concurrency": concurrency,
                "data": {"retrieval": "bm25"},
                "examples": {"rounds": 1, "limit": 4},
                "search": {
                    "width": 2,
                    "actions": 2,
                    "depth": 2,
                    "batch_size": 2,
                    "validation_size": 2,
                    "skip_threshold": 5.0,
                },
            },
            environ={},
        )
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        result = optimize(settings)
        wall = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
        calls = [c for c in RunStore(settings.store).calls(result.run_id) if c["outcome"] == "ok"]
    prompt = sum(c["prompt_tokens"] for c in calls)
    cached = sum(c["cached_tokens"] or 0 for c in calls)
    completion = sum(c["completion_tokens"] for c in calls)
    return {
        "wall": wall,
        "calls": len(calls),
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "completion_tokens": completion,
        "processed": prompt - cached + completion,
        "slots_busy": sum(c["latency"] for c in calls) / (wall * SLOTS),
        "orchestrator_cpu_share": cpu / wall,
    }


def _cpu_seconds() -> float:
    # The model server is a child process, so this process's CPU time is the orchestrator's.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--embedded", action="store_true", help="also measure on SmolLM2")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--latency", type=float, default=0.2, help="stub seconds per call")
    parser.add_argument(
        "--only",
        choices=("schedule", "overhead", "rss", "resume", "embedded"),
        help="run one part (embedded: only the SmolLM2 part)",
    )
    args = parser.parse_args()
    report: dict[str, Any] = {}

    def wanted(part: str) -> bool:
        return args.only in (None, part)

    if wanted("schedule"):
        report["schedule"] = s = schedule_speedup(args.latency)
        print(
            f"1. schedule: {s['calls']:.0f} calls at {args.latency}s each: concurrency 1 "
            f"{s['wall_c1']:.1f}s vs default (4) {s['wall_c4']:.1f}s → speed-up "
            f"{s['speedup']:.2f}× (peak {s['peak_concurrency']:.0f} in flight)"
        )
    if wanted("overhead"):
        report["overhead"] = o = overhead_and_growth()
        print(
            f"2. orchestration per call on a zero-latency stub: "
            f"{statistics.median(o['per_call_ms']):.1f} ms (depths 2/4/8: "
            f"{', '.join(f'{v:.1f}' for v in o['per_call_ms'])} ms)"
        )
        print(
            f"3. checkpoint database: {o['checkpoint_bytes']} bytes by depth; per level "
            f"{o['bytes_per_level']['2→4']:.0f} B (2→4) vs "
            f"{o['bytes_per_level']['4→8']:.0f} B (4→8)"
        )
    if wanted("rss"):
        report["rss_mb"] = rss = {kind: orchestrator_rss(kind) for kind in ("bm25", "auto")}
        print(
            f"4. orchestrator peak RSS: {rss['bm25']['orchestrator']:.0f} MB with BM25 "
            f"retrieval, {rss['auto']['orchestrator']:.0f} MB with sentence embeddings "
            f"(computed in a child process when installed; largest process "
            f"{rss['auto']['largest_descendant']:.0f} MB)"
        )
    if wanted("resume"):
        report["resume"] = r = resume_cost()
        print(
            f"5. resume after SIGKILL ({r['calls_before_kill']:.0f} calls done): "
            f"{r['reissued']:.0f} calls re-issued, resumed run finished in "
            f"{r['resume_seconds']:.1f}s"
        )
    if args.embedded or args.only == "embedded":
        report["embedded"] = e = embedded_efficiency(args.model)
        print(
            f"6. server-bound efficiency ({args.model}): {e['calls']:.0f} calls, "
            f"{e['prompt_tokens']:.0f} prompt tokens ({e['cached_tokens']:.0f} from the "
            f"server's prefix cache) + {e['completion_tokens']:.0f} completion tokens in "
            f"{e['wall']:.0f}s; peak batched rate {e['peak_tok_s']:.0f} tok/s → lower bound "
            f"{e['lower_bound']:.0f}s; ratio {e['ratio']:.2f} (slots busy "
            f"{100 * e['slots_busy']:.0f}% of the time; orchestrator CPU "
            f"{100 * e['orchestrator_cpu_share']:.1f}% of the wall time)"
        )
        print(
            f"   the same search one call at a time: {e['serial_calls']:.0f} calls in "
            f"{e['serial_wall']:.0f}s → default schedule {e['speedup']:.2f}× faster "
            f"({e['speedup_per_token']:.2f}× per processed token)"
        )
        if "overhead" in report:
            per_call = statistics.median(report["overhead"]["per_call_ms"]) / 1000
            share = per_call * e["calls"] / e["wall"]
            print(
                f"   orchestration ({1000 * per_call:.1f} ms per call on the zero-latency stub) "
                f"× {e['calls']:.0f} calls = {100 * share:.1f}% of this run"
            )
    print(json.dumps(report, default=str))
    print(
        "reproduce: .venv/bin/python bench/search_bench.py"
        + (" --embedded" if args.embedded else "")
    )


if __name__ == "__main__":
    main()
