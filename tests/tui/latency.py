"""Key-press latency of the workbench while a real CPU run goes on (a measurement, not a test).

Starts a real ``tiny-random`` run through the App's worker, waits until the solver is pruning,
then presses F4/F3 in turn and times each screen switch: from the key press until the App shows
the other mode. A second probe times how late a 10 ms ``asyncio.sleep`` on the UI loop wakes up
(the longest stretch the loop could not answer anything). Run it with::

    .venv/bin/python -m tests.tui.latency --nsamples 16 --seqlen 128

:func:`measure_switches` is shared with the Pilot test in ``test_real_run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import events
from textual.pilot import Pilot

from duogpt_tui.app import DuoGPTApp
from solver.config import RunConfig
from tests.tui.fakes import CATALOG

SIZE = (120, 40)
"""Terminal size of the measurement (the snapshot size)."""


@dataclass
class Latency:
    """What one measurement saw.

    Attributes:
        switches: seconds from each F3/F4 press until the other mode was shown.
        loop_lag: seconds that each 10 ms sleep on the UI loop overslept.
        layers_during: layers solved while the switches were measured.
        seconds: how long the measurement took.
    """

    switches: list[float] = field(default_factory=list)
    loop_lag: list[float] = field(default_factory=list)
    layers_during: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """``median / p95 / max`` of both figures, in milliseconds."""

        def stats(values: list[float]) -> str:
            if not values:
                return "no samples"
            ordered = sorted(values)
            p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
            return (
                f"median {statistics.median(ordered) * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms, "
                f"max {ordered[-1] * 1e3:.0f} ms (n={len(ordered)})"
            )

        return (
            f"screen switch F3/F4: {stats(self.switches)}; UI loop lag: {stats(self.loop_lag)}; "
            f"{self.layers_during} layers solved in the {self.seconds:.1f} s measured"
        )


async def _probe_loop(lags: list[float], stop: asyncio.Event) -> None:
    """Sleep 10 ms at a time on the UI loop and record how late each wake-up is."""
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(max(time.perf_counter() - start - 0.01, 0.0))


def send_key(app: DuoGPTApp, key: str) -> None:
    """Send a key the way the terminal driver does (Pilot's ``press`` also waits for idle)."""
    event = events.Key(key, None)
    event.set_sender(app)
    assert app._driver is not None
    app._driver.send_message(event)


async def measure_switches(
    app: DuoGPTApp, pilot: Pilot[Any], presses: int = 20, gap: float = 0.1
) -> Latency:
    """Start the App's run, wait for pruning, then time ``presses`` screen switches.

    Args:
        app: a workbench whose setup form holds the run to start.
        pilot: its pilot.
        presses: screen switches to time (fewer when the run ends first).
        gap: seconds between switches.
    """
    result = Latency()
    await pilot.press("ctrl+r")
    deadline = time.monotonic() + 120
    while not app.event_log.layers and time.monotonic() < deadline:
        await pilot.pause(0.02)
    first = len(app.event_log.layers)
    began = time.perf_counter()
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe_loop(result.loop_lag, stop))
    try:
        for index in range(presses):
            if not app.run_active:
                break
            key, mode = ("f4", "report") if index % 2 == 0 else ("f3", "run")
            start = time.perf_counter()
            send_key(app, key)
            while app.current_mode != mode:
                await asyncio.sleep(0.001)
            result.switches.append(time.perf_counter() - start)
            await asyncio.sleep(gap)
    finally:
        stop.set()
        await probe
    result.layers_during = len(app.event_log.layers) - first
    result.seconds = time.perf_counter() - began
    return result


async def _main(config: RunConfig, presses: int) -> Latency:
    """Measure once in a temporary runs folder; cancel the run afterwards."""
    with tempfile.TemporaryDirectory() as folder:
        app = DuoGPTApp(config=config, runs_dir=Path(folder), catalog=CATALOG)
        async with app.run_test(size=SIZE) as pilot:
            result = await measure_switches(app, pilot, presses)
            app.cancel_run()
            while app.run_active:
                await pilot.pause(0.1)
        return result


def main() -> None:
    """Parse the options, measure, print one line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nsamples", type=int, default=16)
    parser.add_argument("--seqlen", type=int, default=128)
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the UI thread here")
    args = parser.parse_args()
    config = RunConfig(
        model="tiny-random",
        nsamples=args.nsamples,
        seqlen=args.seqlen,
        eval_windows=2,
        device="cpu",
        save_model=False,
    )
    if args.profile:
        import cProfile

        with cProfile.Profile() as profile:
            result = asyncio.run(_main(config, args.presses))
        profile.dump_stats(args.profile)
    else:
        result = asyncio.run(_main(config, args.presses))
    print(result.summary())


if __name__ == "__main__":
    main()
