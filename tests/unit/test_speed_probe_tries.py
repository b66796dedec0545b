"""The start-up speed is the fastest of a few spaced probes, so a moment's load does not decide it.

A default run started while a short command took a core was probed at 11 tok/s prefill where the
idle machine gives 55–60, and its search was cut to the smallest; a busy machine stays slow in
every try.
"""

from __future__ import annotations

import time

import pytest
from llama_timings import LlamaTimingsServer

from drpo.backends.speed_probe import ProbeFailed, ServerSpeed, measure_server_speed


def test_a_moments_load_in_one_try_does_not_decide_the_speed() -> None:
    with LlamaTimingsServer([(6000.0, 2000.0), (1000.0, 500.0), (1500.0, 800.0)]) as llama:
        speed = measure_server_speed(llama.root, budget=5, pause=0.01)
    assert speed == ServerSpeed(prefill_per_second=60.0, decode_per_second=16.0)
    assert llama.asked == 3


def test_a_busy_machine_stays_slow_in_every_try() -> None:
    with LlamaTimingsServer([(6000.0, 2000.0)]) as llama:
        assert measure_server_speed(llama.root, budget=5, pause=0.01) == ServerSpeed(10.0, 4.0)
    assert llama.asked == 3


def test_a_later_try_that_fails_or_hangs_keeps_the_tries_before_within_the_budget() -> None:
    with LlamaTimingsServer([(3000.0, 1000.0), "error"]) as llama:
        assert measure_server_speed(llama.root, budget=5, pause=0.01) == ServerSpeed(20.0, 8.0)
    with LlamaTimingsServer([(3000.0, 1000.0), None]) as llama:
        started = time.monotonic()
        assert measure_server_speed(llama.root, budget=1.5, pause=0.01) == ServerSpeed(20.0, 8.0)
        assert time.monotonic() - started < 2.5


def test_the_first_try_failing_fails_the_measurement_in_one_line() -> None:
    with (
        LlamaTimingsServer(["error"]) as llama,
        pytest.raises(ProbeFailed, match="HTTP 500") as failure,
    ):
        measure_server_speed(llama.root, budget=5, pause=0.01)
    assert "\n" not in str(failure.value)
