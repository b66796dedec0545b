"""Measure an embedded llama.cpp server's prefill and decode speed in a few seconds.

The same model runs 5× faster or slower on machines of the same kind, so a time estimate needs
this machine's own figures. One small request to llama.cpp's native `/completion` endpoint, with
the prompt cache off (every prompt token is processed) and a fixed number of generated tokens,
returns the server's own `timings`, which exclude HTTP and queueing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

PROBE_TIMEOUT = 10.0
# About 22 prompt tokens and 4 decoded: under 2 s at 18 and 10 tok/s, and still under 10 s
# on a 2-core machine shared with a dozen busy processes (measured: 5 and 1.4 tok/s).
PROBE_PROMPT = " ".join(f"item {n} of a plain list for measuring speed;" for n in range(2))
PROBE_TOKENS = 4
# One probe lasts about a second, and a command that takes a core for a second or two (a shell
# command, an editor's linter) slows it several times; the forecast and the cut of the default
# search follow this figure, so the probe is repeated, spaced out, and the fastest try taken: a
# busy machine is slow in every try, a moment's load in one. Seen: a default run started while a
# `ruff` and a `pytest` command ran was probed at 11 tok/s prefill where the idle machine gives
# 55–60, and its search was cut to the smallest.
PROBE_TRIES = 3
PROBE_PAUSE = 1.0


class ProbeFailed(RuntimeError):
    """The speed probe got no usable answer; the message is one line."""


@dataclass(frozen=True)
class ServerSpeed:
    """Tokens per second of one request on an otherwise idle server."""

    prefill_per_second: float
    decode_per_second: float

    def seconds(self, prompt_tokens: float, completion_tokens: float) -> float:
        """Seconds one request of these token counts takes at this speed."""
        return prompt_tokens / self.prefill_per_second + completion_tokens / self.decode_per_second


def probe_speed(root_url: str, timeout: float = PROBE_TIMEOUT) -> ServerSpeed:
    """Prefill and decode speed of the llama.cpp server at `root_url` (without `/v1`)."""
    body = {
        "prompt": PROBE_PROMPT,
        "n_predict": PROBE_TOKENS,
        "ignore_eos": True,
        "cache_prompt": False,
        "temperature": 0.0,
    }
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.post(f"{root_url.rstrip('/')}/completion", json=body)
        if response.status_code != 200:
            raise ProbeFailed(f"the speed probe failed: HTTP {response.status_code}")
        timings = response.json()["timings"]
        prefill = 1000.0 * timings["prompt_n"] / timings["prompt_ms"]
        decode = 1000.0 * timings["predicted_n"] / timings["predicted_ms"]
    except httpx.TimeoutException:
        raise ProbeFailed(f"the speed probe took over {timeout:g} s") from None
    except httpx.HTTPError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProbeFailed(f"the speed probe failed: {reason}") from None
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise ProbeFailed(f"the speed probe got an unreadable reply ({exc!r})") from None
    if not (prefill > 0 and decode > 0):
        raise ProbeFailed("the speed probe measured no tokens")
    return ServerSpeed(prefill, decode)


def measure_server_speed(
    root_url: str,
    budget: float = PROBE_TIMEOUT,
    tries: int = PROBE_TRIES,
    pause: float = PROBE_PAUSE,
) -> ServerSpeed:
    """The fastest of up to `tries` probes `pause` s apart, all within `budget` seconds.

    The first probe failing fails the measurement (`ProbeFailed`); a later one failing, or no
    time left for another, ends it with the tries so far.
    """
    started = time.monotonic()
    best = probe_speed(root_url, timeout=budget)
    last = time.monotonic() - started
    for _ in range(tries - 1):
        left = budget - (time.monotonic() - started) - pause
        if left < 2 * last:  # room for a try as slow as the last, with a margin
            break
        time.sleep(pause)
        begun = time.monotonic()
        try:
            speed = probe_speed(root_url, timeout=left)
        except ProbeFailed:
            break
        last = time.monotonic() - begun
        best = ServerSpeed(
            max(best.prefill_per_second, speed.prefill_per_second),
            max(best.decode_per_second, speed.decode_per_second),
        )
    return best
