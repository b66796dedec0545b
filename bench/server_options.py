"""Compare embedded llama.cpp server options side by side, on an idle core and beside a busy one.

    python bench/server_options.py [--options "today,1 thread,poll 0"] [--prompt-items 4]

For each option set one server is started (one at a time, so they never compete), and one
request with the prompt cache off is timed by the server itself (`timings`: prefill and decode
tokens per second), first as the machine is, then with one extra busy process (a pure-Python
spin loop) beside it: llama.cpp's threads wait on each other, so one busy core can collapse its
throughput. A last section sends two prompts sharing a long prefix and prints how many prompt
tokens the server processed for the second (the prefix cache at work). Every figure is also a
ratio against the first option set, measured in the same invocation: absolute speeds on a shared
machine are not comparable between runs, ratios measured minutes apart mostly are.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from drpo.backends.embedded import EmbeddedServer
from drpo.backends.model_files import resolve

# The first set is the reference of every ratio: the server as it was (2 threads on 2 cores).
# The knobs are then tried on 1 thread, the choice on a busy machine (see default_threads).
OPTION_SETS: dict[str, dict[str, str]] = {
    "today (2 threads)": {"--threads": "2"},
    "1 thread": {"--threads": "1"},
    "2 threads + poll 0": {"--threads": "2", "--poll": "0"},
    "1 thread + poll 0": {"--threads": "1", "--poll": "0"},
    "1 thread + ubatch 64": {"--threads": "1", "--ubatch": "64"},
    "1 thread + flash attention": {"--threads": "1", "--flash-attn": "on"},
    "1 thread + KV cache q8_0": {"--threads": "1", "--kv-type": "q8_0"},
}
SHARED_PREFIX = "You are a careful assistant. Follow the house style in every answer. " * 6


@dataclass(frozen=True)
class Timing:
    prompt_tokens: int
    prefill_per_second: float
    decode_per_second: float
    wall: float


def timed(root: str, prompt: str, decode: int, *, cache: bool = False, slot: int = -1) -> Timing:
    started = time.perf_counter()
    body = {
        "prompt": prompt,
        "n_predict": decode,
        "ignore_eos": True,
        "cache_prompt": cache,
        "id_slot": slot,
        "temperature": 0.0,
    }
    reply = httpx.post(f"{root}/completion", json=body, timeout=900.0).json()
    t = reply["timings"]
    return Timing(
        prompt_tokens=int(t["prompt_n"]),
        prefill_per_second=1000.0 * t["prompt_n"] / t["prompt_ms"],
        decode_per_second=1000.0 * t["predicted_n"] / t["predicted_ms"],
        wall=time.perf_counter() - started,
    )


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def measure(model: str, tuning: dict[str, str], prompt: str, decode: int) -> tuple[Timing, Timing]:
    with EmbeddedServer(resolve(model), slots=4, tuning=tuning) as server:
        root = server.root_url
        timed(root, "warm up", 1)  # the first request pays one-off allocations
        quiet = timed(root, prompt, decode)
        with busy_core():
            loaded = timed(root, prompt, decode)
    return quiet, loaded


def prefix_reuse(model: str, decode: int) -> None:
    """Prompt tokens processed for a second prompt sharing a prefix: same slot vs. any slot."""
    with EmbeddedServer(resolve(model), slots=4) as server:
        root = server.root_url
        first = timed(root, SHARED_PREFIX + "Question one?", decode, cache=True, slot=0)
        same = timed(root, SHARED_PREFIX + "Question two?", decode, cache=True, slot=0)
        other = timed(root, SHARED_PREFIX + "Question three?", decode, cache=True, slot=1)
    print(
        f"prefix cache: first prompt {first.prompt_tokens} tokens processed; "
        f"second on the same slot {same.prompt_tokens} "
        f"({same.prompt_tokens / first.prompt_tokens:.2f}×); "
        f"third on another slot {other.prompt_tokens} "
        f"({other.prompt_tokens / first.prompt_tokens:.2f}×)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--options", default=",".join(OPTION_SETS), help="comma-separated names")
    parser.add_argument("--prompt-items", type=int, default=4, help="~10 prompt tokens each")
    parser.add_argument("--decode", type=int, default=4, help="tokens generated per request")
    parser.add_argument("--skip-prefix", action="store_true")
    args = parser.parse_args()
    names = [n.strip() for n in args.options.split(",") if n.strip()]
    unknown = [n for n in names if n not in OPTION_SETS]
    if unknown:
        parser.error(f"unknown option sets {unknown}; known: {', '.join(OPTION_SETS)}")
    items = range(args.prompt_items)
    prompt = " ".join(f"item {n} of a plain list for measuring speed;" for n in items)
    rows: list[tuple[str, Timing, Timing]] = []
    for name in dict.fromkeys(names):
        quiet, loaded = measure(args.model, OPTION_SETS[name], prompt, args.decode)
        rows.append((name, quiet, loaded))
        print(f"measured {name}", file=sys.stderr, flush=True)
    base_quiet, base_loaded = rows[0][1], rows[0][2]
    print(f"model {args.model}; {rows[0][1].prompt_tokens} prompt tokens, {args.decode} decoded")
    print("option set | prefill tok/s (×) | decode tok/s (×) | busy core: prefill (×) | decode (×)")
    for name, quiet, loaded in rows:
        print(
            f"{name} | {quiet.prefill_per_second:.1f} "
            f"({quiet.prefill_per_second / base_quiet.prefill_per_second:.2f}) | "
            f"{quiet.decode_per_second:.2f} "
            f"({quiet.decode_per_second / base_quiet.decode_per_second:.2f}) | "
            f"{loaded.prefill_per_second:.1f} "
            f"({loaded.prefill_per_second / base_loaded.prefill_per_second:.2f}) | "
            f"{loaded.decode_per_second:.2f} "
            f"({loaded.decode_per_second / base_loaded.decode_per_second:.2f})"
        )
    if not args.skip_prefix:
        prefix_reuse(args.model, args.decode)


if __name__ == "__main__":
    main()
