"""Measure the latency and throughput `drpo serve` adds in front of a zero-latency base model.

The stub OpenAI server (tests/support/stub_server.py) plays the base model in one process and
`drpo serve --prompt-file` runs in another, exactly as a user starts it. Two comparisons:

- latency: N sequential requests sent straight to the stub (with the aligned messages the proxy
  would build) vs the same queries through drpo serve; median and p95 of each, and the added
  median (target: under 5 ms);
- throughput: requests with 8 in flight, direct vs proxied (req/s and their ratio).

Every request carries a different query, so retrieval runs each time. `--retrieval bm25` (the
default) measures the proxy itself; `--retrieval embeddings` adds the sentence-embedding
retrieval the paper uses (the search paid the same cost per answer). Client, proxy and stub share
the machine's cores, so absolute numbers depend on the machine.

    .venv/bin/python bench/proxy_latency.py [--requests 300] [--concurrency 8] [--retrieval bm25]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from stub_server import StubProcess  # noqa: E402

from drpo.graph.export import EXPORT_FORMAT  # noqa: E402
from drpo.graph.inference import AlignedPrompt  # noqa: E402

SERVED = "drpo-bench"
SERVE = "import typer; from drpo.cli.serve import serve_command; typer.run(serve_command)"
TOPICS = ("bread", "taxes", "the sea", "France", "sorting algorithms", "sleep", "running")


def export_record(retrieval: str) -> dict[str, Any]:
    """A prompt export like `drpo export RUN --format json` writes: a prompt and 20 examples."""
    examples = [
        {
            "id": f"ex{i}",
            "query": f"Question {i}: how should I think about {TOPICS[i % len(TOPICS)]}?",
            "answer": f"A careful, helpful answer number {i}. " * 8,
        }
        for i in range(20)
    ]
    return {
        "format": EXPORT_FORMAT,
        "run_id": "bench",
        "system_prompt": "You are a helpful, honest assistant.\n"
        + "\n".join(f"- Guideline {i}: be clear and kind." for i in range(8)),
        "examples": examples,
        "top_k": 2,
        "base_mode": "chat",
        "settings": {"data": {"retrieval": retrieval}, "base": {"max_tokens": 64}},
    }


def query(i: int) -> str:
    return f"Request {i}: what is a good way to learn about {TOPICS[i % len(TOPICS)]}?"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def drpo_serve(prompt_file: Path, stub_url: str, concurrency: int) -> Iterator[tuple[str, int]]:
    """Start `drpo serve` in its own process and yield its base URL and process id."""
    command = [
        sys.executable,
        "-c",
        SERVE,
        *("--prompt-file", str(prompt_file), "--endpoint", stub_url, "--model", "stub-model"),
        *("--port", "0", "--max-concurrency", str(concurrency), "--log-level", "warning"),
        *("--served-model-name", SERVED),
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            if select.select([process.stdout], [], [], 1.0)[0]:
                line = process.stdout.readline()
                if not line:
                    break
                match = re.search(r" at (http://\S+/v1)\.", line)
                url = match.group(1) if match else None
        if url is None:
            process.kill()
            raise SystemExit("drpo serve did not start")
        try:
            # The socket listens before the app is ready; wait for the retriever's warm-up.
            deadline = time.monotonic() + 180
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("drpo serve did not become ready")
                time.sleep(0.2)
            yield url, process.pid
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url.removesuffix("/v1") + "/health", timeout=5).is_success
    except httpx.HTTPError:
        return False


def direct_body(aligned: AlignedPrompt, i: int) -> bytes:
    """What drpo serve forwards for request i: the stub does the same work either way."""
    built = aligned.build(query(i))
    messages = [
        {"role": "system", "content": built.system},
        {"role": "user", "content": built.user},
    ]
    body = {"model": "stub-model", "messages": messages, "max_tokens": 64, "temperature": 0.0}
    return json.dumps(body).encode()


def proxied_body(i: int) -> bytes:
    return json.dumps(
        {"model": SERVED, "messages": [{"role": "user", "content": query(i)}]}
    ).encode()


def sequential(requests: list[tuple[str, bytes]]) -> list[float]:
    """Milliseconds per request, one at a time, over one keep-alive connection per server."""
    times = []
    headers = {"Content-Type": "application/json", "Authorization": "Bearer unused"}
    with httpx.Client(timeout=30, trust_env=False) as client:
        for url, body in requests:
            started = time.perf_counter()
            response = client.post(f"{url}/chat/completions", content=body, headers=headers)
            times.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return times


async def _concurrent(url: str, bodies: list[bytes], concurrency: int) -> float:
    headers = {"Content-Type": "application/json", "Authorization": "Bearer unused"}
    pending = iter(bodies)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as client:

        async def worker() -> None:
            for body in pending:
                response = await client.post(
                    f"{url}/chat/completions", content=body, headers=headers
                )
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - started)


def concurrent(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Requests per second with `concurrency` requests in flight."""
    return asyncio.run(_concurrent(url, bodies, concurrency))


def http_stack() -> str:
    """Which HTTP parser and event loop uvicorn picks here ("auto" prefers the C ones)."""
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{parser} + {loop}"


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300, help="sequential requests per side")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--throughput-requests", type=int, default=400)
    parser.add_argument("--retrieval", choices=("bm25", "embeddings"), default="bm25")
    args = parser.parse_args()

    record = export_record(args.retrieval)
    aligned = AlignedPrompt.from_record(record)
    n, m = args.requests, args.throughput_requests
    with tempfile.TemporaryDirectory() as tmp, StubProcess() as stub:
        prompt_file = Path(tmp) / "export.json"
        prompt_file.write_text(json.dumps(record), encoding="utf-8")
        with drpo_serve(prompt_file, stub.base_url, args.concurrency) as (url, pid):
            warm = 20
            sequential([(stub.base_url, direct_body(aligned, -i)) for i in range(1, warm)])
            sequential([(url, proxied_body(-i)) for i in range(1, warm)])
            # Alternate the two so both see the same background load on the machine.
            pairs = [
                item
                for i in range(n)
                for item in ((stub.base_url, direct_body(aligned, i)), (url, proxied_body(i)))
            ]
            times = sequential(pairs)
            direct_ms, proxied_ms = times[0::2], times[1::2]
            direct_rps = proxied_rps = 0.0
            cpu = 0.0
            for _ in range(2):  # best of two rounds each, interleaved
                direct_bodies = [direct_body(aligned, n + i) for i in range(m)]
                direct_rps = max(
                    direct_rps, concurrent(stub.base_url, direct_bodies, args.concurrency)
                )
                cpu_before = cpu_seconds(pid)
                proxied_bodies = [proxied_body(n + i) for i in range(m)]
                proxied_rps = max(proxied_rps, concurrent(url, proxied_bodies, args.concurrency))
                cpu += cpu_seconds(pid) - cpu_before
            cpu_ms = cpu * 1000 / (2 * m)

    added = statistics.median(proxied_ms) - statistics.median(direct_ms)
    print(
        f"drpo serve proxy overhead ({args.retrieval} retrieval, top 2 of 20 examples; "
        f"uvicorn {http_stack()}; {os.cpu_count()} cores shared by client, proxy and stub)"
    )
    print(f"  sequential, {n} requests each (interleaved):")
    print(
        f"    direct to stub : median {statistics.median(direct_ms):6.2f} ms   "
        f"p95 {p95(direct_ms):6.2f} ms"
    )
    print(
        f"    via drpo serve : median {statistics.median(proxied_ms):6.2f} ms   "
        f"p95 {p95(proxied_ms):6.2f} ms"
    )
    print(
        f"    added median   : {added:6.2f} ms   (target < 5 ms: "
        f"{'met' if added < 5 else 'NOT met'})"
    )
    print(f"  throughput, {args.concurrency} in flight, {m} requests, best of 2 rounds:")
    print(f"    direct to stub : {direct_rps:7.1f} req/s")
    print(f"    via drpo serve : {proxied_rps:7.1f} req/s   (ratio {proxied_rps / direct_rps:.2f})")
    if cpu_ms > 0:
        print(
            f"    proxy CPU      : {cpu_ms:.2f} ms per request, i.e. about "
            f"{1000 / cpu_ms:.0f} req/s per core before the proxy itself is the limit"
        )
    extra = "" if args.retrieval == "bm25" else f" --retrieval {args.retrieval}"
    print(
        f"reproduce: .venv/bin/python bench/proxy_latency.py --requests {n} "
        f"--concurrency {args.concurrency}{extra}"
    )


if __name__ == "__main__":
    main()
