"""Compare embedded llama.cpp server options and prompt layouts on a workload shaped like a run.

    python bench/server_options.py [--options "today,1 thread,slot pinning"] [--model NAME]

For each option set (server flags, prompt layouts, how a prompt's sampled choices are sent) one
server is started (one at a time, so they never compete) and a fixed workload is sent to it
through the OpenAI-compatible chat endpoint drpo uses: three waves of requests rendered from
drpo's own templates and shipped data, shaped like a default run's steps (an aspect choice, a
base answer and two rewrites of a prompt, then two judgements, then the next query's choice and
answer), each wave's requests in flight together, as the run's 4 slots are. Completion lengths
are fixed (`ignore_eos`), so every set decodes the same tokens.

Printed per set: the prompt tokens the server processed (its own `timings.prompt_n`; the rest came
from its prefix cache) and the workload's wall time, both as ratios against the first set measured
in the same invocation, the default run's time extrapolated from the set's per-token costs (the
recorded 18.7-min default run's processed prompt and completion tokens at this set's server
seconds per token, the prompt tokens scaled by this set's cache hits), and, for the sets that
choose threads, the slowdown with one extra busy process (a pure-Python spin loop)
beside the server: llama.cpp's threads wait on each other, so one busy core can collapse its
throughput. Absolute speeds on a shared machine are not
comparable between invocations; ratios measured minutes apart mostly are.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from drpo.backends.embedded import EmbeddedServer
from drpo.backends.llm import slot_for
from drpo.backends.model_files import resolve
from drpo.graph.api import load_run_data
from drpo.prompts.base import format_base_prompt
from drpo.prompts.judge import JUDGE_ANSWER, format_aspects
from drpo.prompts.optimizer import REWRITE_CASE, REWRITE_PROMPT
from drpo.prompts.rubric import BUILTIN_RUBRIC
from drpo.prompts.selector import NEW_ASPECTS_FORBIDDEN, SELECT_ASPECTS
from drpo.state.settings import load_settings

# The recorded default run the time is extrapolated from (README "Performance").
DEFAULT_RUN_SECONDS = 1124.0
SLOTS = 4
# Decoded tokens per request, by role: a fifth of the default run's mean reply (selector 89, base
# 172, judge 209, optimizer 235), to keep the bench short; the default run's time is then
# weighted by its own prompt and completion tokens (`default_run_seconds`).
DECODE = {"selector": 24, "base": 40, "judge": 40, "optimizer": 40}
# The recorded default run's tokens: prompt tokens the server processed, and completion tokens.
DEFAULT_RUN_PROCESSED = 24364
DEFAULT_RUN_COMPLETION = 9799


@dataclass(frozen=True)
class OptionSet:
    """One server configuration and prompt layout to time."""

    flags: dict[str, str] = field(default_factory=dict)
    slots: int = SLOTS
    pinned: bool = False
    busy: bool = False  # also time it beside one busy process
    # A prompt's sampled choices (the rewrites of one prompt) as one request with `n`, as drpo
    # sends them to the embedded server since 979ba70; False: one request per choice, as before.
    choices_in_one_request: bool = True


OPTION_SETS: dict[str, OptionSet] = {
    "today (2 threads; 4 slots)": OptionSet({"--threads": "2"}, busy=True),
    "1 thread": OptionSet({"--threads": "1"}, busy=True),
    "poll 0": OptionSet({"--threads": "2", "--poll": "0"}),
    "ubatch 64": OptionSet({"--threads": "2", "--ubatch": "64"}),
    "flash attention": OptionSet({"--threads": "2", "--flash-attn": "on"}),
    "KV cache q8_0": OptionSet({"--threads": "2", "--kv-type": "q8_0"}),
    "2 slots": OptionSet({"--threads": "2"}, slots=2),
    "1 slot": OptionSet({"--threads": "2"}, slots=1),
    "slot pinning": OptionSet({"--threads": "2"}, pinned=True),
    "draft 0.5B (speculative)": OptionSet({"--threads": "2", "--draft": "qwen2.5-coder-0.5b"}),
    "choices as separate requests": OptionSet({"--threads": "2"}, choices_in_one_request=False),
}


@dataclass(frozen=True)
class Request:
    role: str
    messages: list[dict[str, str]]
    choices: int = 1


@dataclass
class Measured:
    """Tokens and time of one workload (or one request of it)."""

    processed: int = 0
    prompt: int = 0
    completion: int = 0
    seconds: float = 0.0
    # The server's own milliseconds for prefill and decode, summed over requests.
    prompt_ms: float = 0.0
    decode_ms: float = 0.0

    def add(self, part: Measured) -> None:
        self.processed += part.processed
        self.prompt += part.prompt
        self.completion += part.completion
        self.prompt_ms += part.prompt_ms
        self.decode_ms += part.decode_ms

    def default_run_seconds(self, reference: Measured) -> float:
        """The recorded default run's time, scaled by this set's per-token costs and cache hits.

        Seconds per processed prompt token and per completion token are the server's own (under
        the workload's concurrency); the run's processed prompt tokens change in proportion to
        this set's against the reference's (slot pinning changes what the cache serves).
        """

        def cost(m: Measured, processed: float) -> float:
            return processed * m.prompt_ms / m.processed + DEFAULT_RUN_COMPLETION * (
                m.decode_ms / m.completion
            )

        processed = DEFAULT_RUN_PROCESSED * self.processed / reference.processed
        return DEFAULT_RUN_SECONDS * cost(self, processed) / cost(reference, DEFAULT_RUN_PROCESSED)


def workload(short: bool = False) -> list[list[Request]]:
    """Three waves of requests rendered from drpo's templates and its shipped data."""
    settings = load_settings(environ={})
    data = load_run_data(settings)
    queries = [q.query for q in data.train[:2]]
    examples = sorted(data.examples, key=lambda e: len(e.query) + len(e.answer), reverse=True)
    examples = examples[: settings.data.top_k]
    pool = BUILTIN_RUBRIC.selectable()
    fixed = tuple(a.as_aspect() for a in BUILTIN_RUBRIC.aspects if a.applies != "selector")
    answers = [e.answer for e in data.examples[:4]]

    def chat(role: str, system: str, user: str) -> Request:
        return Request(
            role, [{"role": "system", "content": system}, {"role": "user", "content": user}]
        )

    def select(query: str) -> Request:
        system, user = SELECT_ASPECTS.render(
            min_aspects="2",
            max_aspects="3",
            catalogue=format_aspects(pool),
            new_aspects_rule=NEW_ASPECTS_FORBIDDEN,
            query=query,
        )
        return chat("selector", system, user)

    def base(query: str) -> Request:
        prompt = format_base_prompt(settings.search.initial_prompt, examples, query)
        return chat("base", prompt.system, prompt.user)

    def judge(query: str, answer: str) -> Request:
        # Each query has its own aspects, as the selector would choose them.
        chosen = format_aspects((*fixed, *pool[queries.index(query) :][:3]))
        return chat("judge", *JUDGE_ANSWER.render(aspects=chosen, query=query, answer=answer))

    critique = "\n".join(f"- {a.name}: 3/5. Too vague in places." for a in pool[:3])
    case = REWRITE_CASE.render(number="1", query=queries[0], answer=answers[0], critique=critique)
    rewrite = REWRITE_PROMPT.render(
        max_new_bullets="2",
        max_bullets="8",
        prompt=settings.search.initial_prompt,
        history="(none)",
        cases=case[1],
    )
    q1, q2 = queries
    # A run asks for `search.actions` (2) rewrites of each prompt.
    rewrites = replace(chat("optimizer", *rewrite), choices=2)
    waves = [
        [select(q1), base(q1), rewrites],
        [judge(q1, answers[0]), judge(q2, answers[1])],
        [select(q2), base(q2)],
    ]
    if short:  # a 2-core machine under load: the calls whose prefixes repeat, no rewrite
        waves = [[select(q1), base(q1)], [judge(q1, answers[0])], [select(q2), base(q2)]]
    return waves


def _send(root: str, request: Request, pinned: int) -> Measured:
    body: dict[str, Any] = {
        "messages": request.messages,
        "max_tokens": DECODE[request.role],
        "ignore_eos": True,
        "temperature": 0.7 if request.choices > 1 else 0.0,
        "cache_prompt": True,
    }
    if request.choices > 1:
        body["n"] = request.choices
    if pinned:
        body["id_slot"] = slot_for(request.messages[0]["content"], pinned)
    reply = httpx.post(f"{root}/v1/chat/completions", json=body, timeout=1800.0).json()
    usage = reply["usage"]
    # llama.cpp's own timings, also on its OpenAI-compatible endpoint; with `n` they and `usage`
    # cover the first choice only: the prompt is processed once, every choice decodes
    # `max_tokens` (`ignore_eos`), side by side.
    timings = reply["timings"]
    return Measured(
        processed=int(timings["prompt_n"]),
        prompt=usage["prompt_tokens"],
        completion=usage["completion_tokens"] * request.choices,
        prompt_ms=float(timings["prompt_ms"]),
        decode_ms=float(timings["predicted_ms"]) * request.choices,
    )


def run_workload(
    root: str, waves: list[list[Request]], pinned: int, choices_together: bool = True
) -> Measured:
    """Send each wave's requests together, wave after wave; sum tokens, time the whole."""
    if not choices_together:
        waves = [[replace(r, choices=1) for r in wave for _ in range(r.choices)] for wave in waves]
    total = Measured()
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=SLOTS) as threads:
        for wave in waves:
            for part in threads.map(lambda r: _send(root, r, pinned), wave):
                total.add(part)
    total.seconds = time.perf_counter() - started
    return total


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """One extra process spinning on a core for as long as the block runs."""
    # The spinner dies with the bench (PR_SET_PDEATHSIG, SIGKILL), even if the bench is killed.
    die_with_parent = "import ctypes; ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)\n"
    spinner = subprocess.Popen([sys.executable, "-c", die_with_parent + "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def measure(model: str, option: OptionSet, waves: list[list[Request]]) -> tuple[Measured, ...]:
    """The workload on a fresh server with these options; then again beside a busy process."""
    flags = dict(option.flags)
    if "--draft" in flags:
        flags["--draft"] = str(resolve(flags["--draft"]))
    with EmbeddedServer(resolve(model), slots=option.slots, tuning=flags) as server:
        root = server.root_url
        pinned = option.slots if option.pinned else 0
        # The first request pays one-off allocations.
        httpx.post(f"{root}/completion", json={"prompt": "warm up", "n_predict": 1}, timeout=600)
        quiet = run_workload(root, waves, pinned, option.choices_in_one_request)
        if not option.busy:
            return (quiet,)
    # A fresh server, so the second pass finds nothing of the first in its prefix cache.
    with EmbeddedServer(resolve(model), slots=option.slots, tuning=flags) as server:
        root = server.root_url
        httpx.post(f"{root}/completion", json={"prompt": "warm up", "n_predict": 1}, timeout=600)
        with busy_core():
            return quiet, run_workload(root, waves, pinned, option.choices_in_one_request)


def _row(name: str, runs: tuple[Measured, ...], base: tuple[Measured, ...]) -> str:
    quiet, ref = runs[0], base[0]
    ratio = quiet.seconds / ref.seconds
    run = quiet.default_run_seconds(ref)
    cells = [
        name,
        f"{quiet.processed} of {quiet.prompt} ({quiet.processed / ref.processed:.2f})",
        f"{quiet.seconds:.0f} s ({ratio:.2f})",
        f"{run / 60:.1f} min ({run / DEFAULT_RUN_SECONDS:.2f})",
    ]
    if len(runs) > 1:
        cells.append(f"{runs[1].seconds:.0f} s ({quiet.seconds / runs[1].seconds:.2f}×)")
    else:
        cells.append("–")
    return " | ".join(cells)


def main() -> None:
    """Time the workload under each option set and print the ratios against the first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--options", default=",".join(OPTION_SETS), help="comma-separated names")
    parser.add_argument("--short", action="store_true", help="5 requests instead of 7")
    args = parser.parse_args()
    names = list(dict.fromkeys(n.strip() for n in args.options.split(",") if n.strip()))
    unknown = [n for n in names if n not in OPTION_SETS]
    if unknown:
        parser.error(f"unknown option sets {unknown}; known: {', '.join(OPTION_SETS)}")
    waves = workload(args.short)
    print(
        "option set | prompt tokens processed (×) | workload time (×) | default run (×) "
        "| beside a busy process (speed ×)",
        flush=True,
    )
    rows: list[tuple[str, tuple[Measured, ...]]] = []
    for name in names:
        started = time.perf_counter()
        try:
            rows.append((name, measure(args.model, OPTION_SETS[name], waves)))
        except Exception as exc:  # one set that cannot run (a flag this build lacks) is reported
            print(f"{name}: failed ({type(exc).__name__}: {exc})", flush=True)
            if not rows:
                raise SystemExit("error: the reference option set could not be measured") from None
            continue
        spent = time.perf_counter() - started
        # Each row as soon as it is measured: a bench stopped early keeps what it measured.
        print(_row(name, rows[-1][1], rows[0][1]), flush=True)
        print(f"measured {name} in {spent:.0f} s: {rows[-1][1]}", file=sys.stderr, flush=True)
    requests = sum(len(w) for w in waves)
    completion = rows[0][1][0].completion
    print(
        f"model {args.model}; {requests} requests in {len(waves)} waves, {completion} completion "
        f"tokens; ratios against {names[0]!r}; default run: the recorded "
        f"{DEFAULT_RUN_SECONDS / 60:.1f} min at this set's per-token costs and cache hits"
    )


if __name__ == "__main__":
    main()
