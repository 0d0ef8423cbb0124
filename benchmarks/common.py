"""Shared code of the benchmark scripts (issue 4): run configurations, collect, write Markdown.

Each benchmark script builds a list of ``(label, RunConfig)``, runs them one at a time through
:func:`duogpt_tui.runner.stream` (the pipeline, ended by the runner) — each in a fresh Python
process by default, so that the peak RSS of one run is not inflated by the ones before it — and
writes a table as Markdown together with the exact command, the protocol, the machine (cpu
count, torch threads, load) and the date.

``--quick`` runs a reduced version meant to finish in under 3 minutes on 2 cores: the first
:data:`QUICK_BLOCKS` decoder blocks of SmolLM2-135M (saved once into the model cache), 4 x 128
calibration tokens and 4 x 128 evaluation tokens. Its perplexities only check that the pipeline
works; only the full-size figures compare methods.

A single configuration can also be run by hand::

    python -m benchmarks.common '{"method": "sparsegpt", "act_sparsity": 0}'
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

FULL = {
    "model": "smollm2-135m",
    "calib": "sotu",
    "eval": "moby-dick",
    "nsamples": 16,
    "seqlen": 256,
    "eval_windows": 16,
    "seed": 0,
    "device": "cpu",
}
"""The full-size protocol: the defaults of ``duogpt prune`` (README), on the CPU."""

QUICK_BLOCKS = 2
"""Decoder blocks kept in the ``--quick`` model."""

QUICK = {**FULL, "nsamples": 4, "seqlen": 128, "eval_windows": 4}
"""The ``--quick`` protocol (its ``model`` is set by :func:`quick_model`)."""

NO_FILES = {"save_model": False, "checkpoints": False}
"""Benchmarks keep nothing on disk."""


# --------------------------------------------------------------------- configurations


def quick_model() -> str:
    """A local copy of SmolLM2-135M cut to its first :data:`QUICK_BLOCKS` blocks (made once)."""
    from solver.io.models import load_model, model_cache_dir

    target = model_cache_dir() / f"bench-smollm2-135m-{QUICK_BLOCKS}blocks"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return str(target)
    import torch

    loaded = load_model("smollm2-135m", dtype=torch.float32)
    model = loaded.model
    model.model.layers = model.model.layers[:QUICK_BLOCKS]
    model.config.num_hidden_layers = QUICK_BLOCKS
    if hasattr(model.config, "layer_types") and model.config.layer_types:
        model.config.layer_types = model.config.layer_types[:QUICK_BLOCKS]
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    loaded.tokenizer.save_pretrained(partial)
    os.replace(partial, target)
    return str(target)


def protocol(quick: bool, threads: int = 0) -> dict[str, Any]:
    """The base configuration fields of the full or quick protocol (``threads``: see
    :func:`set_threads`; 0 keeps torch's default)."""
    if threads:
        set_threads(threads)
    if quick:
        return {**QUICK, "model": quick_model()}
    return dict(FULL)


def protocol_text(base: dict[str, Any], quick: bool, jobs: int = 1, reference: bool = False) -> str:
    """One paragraph that says how every figure of a table was measured (``jobs``: runs at a
    time; ``reference``: the dense figures come from :func:`reference_config`)."""
    model = (
        f"SmolLM2-135M cut to its first {QUICK_BLOCKS} decoder blocks (quick check only)"
        if quick
        else "SmolLM2-135M (30 decoder blocks, float32)"
    )
    at_once = (
        "one run at a time"
        if jobs <= 1
        else f"{jobs} runs at a time (their wall times share the cores)"
    )
    dense = (
        " The dense figures come from one reference run (the default DuoGPT run with its dense "
        "evaluations on); every other run skips the dense evaluations."
        if reference
        else ""
    )
    return (
        f"Model {model}; calibration {base['nsamples']} x {base['seqlen']} tokens of "
        f"`{base['calib']}` (seed {base['seed']}); perplexity on {base['eval_windows']} "
        f"non-overlapping windows of {base['seqlen']} tokens spread evenly over `{base['eval']}` "
        "(prose only; the protocol object of each run records the text's SHA-256 and the "
        "windows' token offsets), activation "
        "sparsity on for every token (per-token top-k unless stated); device "
        f"`{base['device']}` with {_threads_text()}; {at_once}, each in a fresh process unless "
        "stated. Weight sparsity is per layer over the decoder blocks' linear layers; activation "
        "sparsity is the measured fraction of zeroed inputs during the final evaluation." + dense
    )


def _threads_text() -> str:
    threads = os.environ.get(THREADS_ENV)
    return f"{threads} torch thread(s)" if threads else "torch's default threads"


# --------------------------------------------------------------------- running


def run_in_process(config: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration here and return its summary (see :func:`summarize`)."""
    from duogpt_tui.runner import stream
    from solver.config import RunConfig

    cfg = RunConfig.from_dict({**config, **NO_FILES})
    tick = time.monotonic()
    events: list[Any] = list(stream(cfg))  # the terminal event last, made by the runner
    wall = time.monotonic() - tick
    return summarize(events, wall)


def run_isolated(config: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """Run one configuration in a fresh Python process (clean peak RSS); its summary."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.common", json.dumps(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return {"status": "failed", "error": " / ".join(tail) or f"exit {done.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def summarize(events: Sequence[Any], wall: float) -> dict[str, Any]:
    """The figures a benchmark table needs, from one run's events (through its
    :class:`~duogpt_tui.runview.RunView`, the fold the CLI and the report use too)."""
    from duogpt_tui.runview import RunView
    from solver.math import speedup

    view = RunView.of(events)
    out: dict[str, Any] = {"status": "incomplete", "wall_s": round(wall, 2)}
    if view.started is not None:
        out["n_params"] = view.started.n_params
        out["dtype"] = view.started.dtype
        out["n_blocks"] = view.started.n_blocks
        out["calib_tokens"] = view.started.calib.get("tokens")
    for label, measured in view.reference_perplexities().items():
        out[f"ppl_{label}"] = measured.ppl
    pruned = view.perplexity("pruned")
    if pruned is not None:
        out["eval_act_sparsity"] = pruned.act_sparsity
    out["solve_s"] = round(sum(layer.seconds for layer in view.layers), 3)
    out["layers"] = view.layers_done
    decode = [layer.decode for layer in view.layers if layer.decode]
    if decode:
        ratios = speedup.speedups(speedup.total(decode))
        out["speedup_bytes"] = {m: ratios[m]["bytes"] for m in speedup.MODES}
    finished = view.finished
    if finished is not None:
        out.update(
            status="finished",
            seconds=round(finished.seconds, 2),
            weight_sparsity=finished.weight_sparsity,
            act_sparsity=finished.act_sparsity,
            peak_rss_mb=round(finished.peak_memory_mb, 1),
            timings=dict(finished.timings),
        )
    elif view.terminal is not None:
        out["status"] = view.terminal.kind
        out["error"] = view.error or getattr(view.terminal, "reason", "")
    return out


def config_key(config: dict[str, Any]) -> str:
    """A configuration's identity: every RunConfig field spelled out (defaults included), the
    evaluation length normalised, and the torch threads (they change float sums, hence results)."""
    from solver.config import RunConfig

    fields = RunConfig.from_dict({**config, **NO_FILES}).to_dict()
    for name, default in LATER_FIELDS.items():  # keep the keys of runs cached before them
        if fields.get(name) == default:
            fields.pop(name)
    if fields.get("eval_seqlen") == fields.get("seqlen"):
        fields["eval_seqlen"] = 0
    fields["threads"] = os.environ.get(THREADS_ENV, "")
    fields["protocol"] = PROTOCOL_VERSION
    return json.dumps(fields, sort_keys=True)


LATER_FIELDS = {"residual_source": "dense", "channel_alpha": 0.0}
"""RunConfig fields added after results were cached, left out of a key at their default (which
reproduces what the runs before them did), so that those cached runs stay valid."""

PROTOCOL_VERSION = 2
"""Part of every cache key: raised when the texts or the evaluation change under the same
options (2: issue 12's prose-only corpora, windows spread over the held-out text)."""


class ResultCache:
    """Finished run summaries in a JSON-lines file, keyed by :func:`config_key`.

    The scripts share configurations (the W50% + X50% DuoGPT run is in the method table, the
    sweep and the ablations), so a cache given with ``--cache`` runs each one once; an
    interrupted benchmark picks up where it stopped. Only finished runs are kept.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        self.reload()

    def reload(self) -> None:
        """Read the file (again: another process may have added runs); bad lines are skipped."""
        if self.path is None or not self.path.is_file():
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                self.entries[entry["key"]] = entry["summary"]
            except (ValueError, KeyError, TypeError):
                continue

    def get(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """The cached summary of ``config``, or None."""
        return self.entries.get(config_key(config))

    def put(self, config: dict[str, Any], summary: dict[str, Any]) -> None:
        """Remember a finished run (others are not cached)."""
        if self.path is None or summary.get("status") != "finished":
            return
        key = config_key(config)
        summary = {**summary, "measured": _now()}
        self.entries[key] = summary
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "config": config, "summary": summary}) + "\n")


def reference_config(base: dict[str, Any]) -> dict[str, Any]:
    """The run that measures the dense model (and dense + X50%) for every table: the default
    DuoGPT run with its dense evaluations on. Every other run skips them (``eval_dense``
    false), which saves two evaluations per run."""
    return {
        **base,
        "method": "duogpt",
        "weight_sparsity": 0.5,
        "act_sparsity": 0.5,
        "eval_dense": True,
    }


def run_all(
    runs: Sequence[tuple[str, dict[str, Any]]],
    *,
    isolate: bool = True,
    jobs: int = 1,
    cache: ResultCache | None = None,
    cached_only: bool = False,
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Run ``(label, config)`` pairs, ``jobs`` at a time (each in its own process when
    ``isolate``); ``(label, config, summary)`` per run, in the order given. Runs found in
    ``cache`` are not run again (their summary says ``cached``); with ``cached_only`` the others
    are not run either (their status is ``not run``)."""
    cache = cache or ResultCache(None)
    summaries: dict[int, dict[str, Any]] = {}
    todo = []
    for index, (label, config) in enumerate(runs):
        found = cache.get(config)
        if found is not None:
            summaries[index] = {**found, "cached": True}
            _report(index, len(runs), label, summaries[index], "cached")
        elif cached_only:
            summaries[index] = {"status": "not run", "error": "not in the cache"}
        else:
            todo.append(index)

    def one(index: int) -> dict[str, Any]:
        label, config = runs[index]
        # a fresh read of the file (no state shared with the main thread)
        found = ResultCache(cache.path).get(config)
        if found is not None:  # another process ran it meanwhile
            return {**found, "cached": True}
        print(
            f"[{index + 1}/{len(runs)}] {label} (load {_load():.2f})", file=sys.stderr, flush=True
        )
        summary = run_isolated(config) if isolate else run_in_process(config)
        summary["load_after"] = round(_load(), 2)
        return summary

    if jobs > 1 and isolate:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(one, index): index for index in todo}
            for future in as_completed(futures):
                index = futures[future]
                summaries[index] = future.result()
                _finished(index, runs, summaries[index], cache)
    else:
        for index in todo:
            summaries[index] = one(index)
            _finished(index, runs, summaries[index], cache)
    return [(label, config, summaries[i]) for i, (label, config) in enumerate(runs)]


def run_from_args(
    runs: Sequence[tuple[str, dict[str, Any]]], args: argparse.Namespace, *, isolate: bool = True
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """:func:`run_all` with the options of :func:`arguments` (``--jobs``, ``--cache``,
    ``--cached-only``)."""
    return run_all(
        runs,
        isolate=isolate,
        jobs=args.jobs,
        cache=ResultCache(args.cache),
        cached_only=args.cached_only,
    )


def _finished(
    index: int,
    runs: Sequence[tuple[str, dict[str, Any]]],
    summary: dict[str, Any],
    cache: ResultCache,
) -> None:
    """Cache a run that was just measured and print its line (main thread only)."""
    label, config = runs[index]
    if not summary.get("cached"):
        cache.put(config, summary)
    _report(index, len(runs), label, summary, str(summary.get("status")))


def _report(index: int, total: int, label: str, summary: dict[str, Any], status: str) -> None:
    ppl = summary.get("ppl_pruned", summary.get("ppl_dense"))
    print(
        f"    [{index + 1}/{total}] {label}: {status}: ppl {fmt(ppl)}, "
        f"{fmt(summary.get('seconds'), 1)} s, peak {fmt(summary.get('peak_rss_mb'), 0)} MB",
        file=sys.stderr,
        flush=True,
    )


# --------------------------------------------------------------------- the machine


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _now() -> str:
    """The local date and time, to the minute, with the zone."""
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def machine() -> dict[str, Any]:
    """CPU count, torch threads, load averages, platform, versions and the date."""
    import torch

    try:
        loads = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        loads = []
    try:
        memory = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory = None
    return {
        "date": _now(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1_5_15": loads,
        "memory_gb": memory,
        "platform": platform.platform(terse=True),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


THREADS_ENV = "DUOGPT_BENCH_THREADS"
"""Torch threads for the benchmark and the processes it starts (unset: torch's default)."""


def set_threads(threads: int) -> None:
    """Use ``threads`` torch threads here and in every run process started from here."""
    import torch

    os.environ[THREADS_ENV] = str(threads)
    torch.set_num_threads(threads)


def apply_thread_setting() -> None:
    """Honour :data:`THREADS_ENV` (called by each run process)."""
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------- output


def arguments(description: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark script shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="reduced run (< 3 min on 2 cores)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads in every run (0: torch default)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at a time, each in its own process (default 1)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="JSON-lines file of finished runs, shared by the scripts: a run found there is "
        "not run again",
    )
    parser.add_argument(
        "--cached-only",
        action="store_true",
        help="run nothing: write the table from --cache, marking missing runs 'not run'",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every configuration in this process (faster start, peak RSS not per run)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="calibration seeds, e.g. --seeds 0 1 2: every row runs once per seed and the "
        "tables give mean ± sd and each seed's value (default: the protocol's seed, 0)",
    )
    return parser


# --------------------------------------------------------------------- seeds


def seeds_of(args: argparse.Namespace, base: dict[str, Any]) -> list[int]:
    """The seeds to run: ``--seeds``, else the protocol's own seed (no repeats, in order)."""
    seeds = list(getattr(args, "seeds", None) or [int(base["seed"])])
    return list(dict.fromkeys(seeds))


def with_seed(config: dict[str, Any], seed: int) -> dict[str, Any]:
    """``config`` calibrated with ``seed``."""
    return {**config, "seed": seed}


def seeded(config: dict[str, Any], seeds: Sequence[int]) -> list[tuple[int, dict[str, Any]]]:
    """``(seed, config)`` per seed; magnitude pruning reads no calibration data, so one run
    (at the first seed) stands for every seed."""
    if config.get("method") == "magnitude":
        return [(seeds[0], with_seed(config, seeds[0]))]
    return [(seed, with_seed(config, seed)) for seed in seeds]


@dataclass(frozen=True)
class SeedFigures:
    """One figure of one row over the seeds.

    Attributes:
        values: seed -> the figure (None: that seed's run did not finish).
        seeds: the seeds of the table (a row that ran at fewer shows ``-`` for the others).
    """

    values: dict[int, float | None]
    seeds: tuple[int, ...]

    @property
    def measured(self) -> list[float]:
        """The finished seeds' values."""
        return [v for v in self.values.values() if v is not None]

    @property
    def mean(self) -> float | None:
        """The mean over the finished seeds (None: none finished)."""
        found = self.measured
        return statistics.mean(found) if found else None

    def mean_sd(self) -> str:
        """``mean ± sd`` (sd over the seeds, n-1), or the one value (second_model's format)."""
        from benchmarks.second_model import mean_sd

        return mean_sd(self.measured)

    def cells(self) -> list[str]:
        """Each seed's value (``-`` where the row did not run at that seed)."""
        return [fmt(self.values[s]) if s in self.values else "-" for s in self.seeds]


def seed_figures(
    summaries: dict[int, dict[str, Any]], seeds: Sequence[int], key: str = "ppl_pruned"
) -> SeedFigures:
    """``key`` of each seed's summary (None for a run that did not finish)."""
    values = {
        seed: summary.get(key) if summary.get("status") == "finished" else None
        for seed, summary in summaries.items()
    }
    return SeedFigures(values, tuple(seeds))


def seeds_text(seeds: Sequence[int]) -> str:
    """``calibration seeds 0, 1, 2 (mean ± sd over them, n-1)`` for a protocol line."""
    if len(seeds) < 2:
        return ""
    return (
        f" Calibration seeds {', '.join(map(str, seeds))}: each figure is the mean ± sd over "
        "them (n-1), each seed's value in its own column; magnitude reads no calibration data "
        "and runs once."
    )


def command_line() -> str:
    """The command that is running, as a shell line."""
    argv = [".venv/bin/python", *sys.argv]
    if argv[1].endswith(".py"):
        argv[1] = os.path.relpath(argv[1], ROOT)
    return shlex.join(argv)


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table cell (:func:`duogpt_tui.formatting.number` for floats); ``n/a`` for
    missing."""
    from duogpt_tui.formatting import number

    if value is None or isinstance(value, float):
        return number(value, digits, missing="n/a")
    return str(value)


def pct(value: Any) -> str:
    """A fraction as a percentage (:func:`duogpt_tui.formatting.percent`)."""
    from duogpt_tui.formatting import percent

    return percent(None if value is None else float(value), missing="n/a")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table (``align``: one ``l``/``r`` per column, default first l, rest r)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def document(
    title: str,
    sections: Sequence[str],
    *,
    protocol_line: str,
    started: dict[str, Any],
    seconds: float,
    results: Sequence[tuple[str, dict[str, Any], dict[str, Any]]] = (),
) -> str:
    """The Markdown file of one benchmark: title, command, protocol, machine, date, sections
    (``results``: the runs, to say how many came from the cache and when they were measured)."""
    ended = machine()
    lines = [
        f"# {title}",
        "",
        f"Command: `{command_line()}` (from the repository root, after `make setup`).",
        "",
        f"Protocol: {protocol_line}",
        "",
        (
            f"Machine: {started['cpus']} CPUs ({started['processor']}, {started['platform']}), "
            f"{started['memory_gb']} GB memory, torch {started['torch']} with "
            f"{started['torch_threads']} threads, Python {started['python']}; load average "
            f"(1/5/15 min) {started['load_avg_1_5_15']} at the start and "
            f"{ended['load_avg_1_5_15']} at the end (the machine was shared: wall times are "
            "upper bounds)."
        ),
        "",
        f"Date: {started['date']}; the benchmark took {seconds:.0f} s.",
        "",
    ]
    cached = [summary for _, _, summary in results if summary.get("cached")]
    if cached:
        dates = sorted(str(summary.get("measured", "?")) for summary in cached)
        lines += [
            f"{len(cached)} of {len(results)} runs were read from the result cache (`--cache`): "
            f"measured from {dates[0]} to {dates[-1]} with the same configuration and threads, "
            "on the machine above.",
            "",
        ]
    for section in sections:
        lines += [section.rstrip("\n"), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


@dataclass
class Session:
    """One benchmark script's run: the machine when it started, the clock, where it writes.

    Attributes:
        out: the Markdown file to write (None: print only).
        started: :func:`machine` at the start.
        tick: ``time.monotonic()`` at the start.
    """

    out: Path | None
    started: dict[str, Any] = field(default_factory=lambda: machine())
    tick: float = field(default_factory=time.monotonic)

    def publish(
        self,
        title: str,
        sections: Sequence[str],
        *,
        protocol_line: str,
        results: Sequence[tuple[str, dict[str, Any], dict[str, Any]]] = (),
    ) -> None:
        """Render the document (:func:`document`), print it and write it (:func:`finish`)."""
        seconds = time.monotonic() - self.tick
        text = document(
            title,
            sections,
            protocol_line=protocol_line,
            started=self.started,
            seconds=seconds,
            results=results,
        )
        finish(text, self.out)


def finish(text: str, out: Path | None) -> None:
    """Print the Markdown and write it to ``out`` when given."""
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        print(f"written to {out}", file=sys.stderr)


def main() -> None:
    """Run one configuration (a JSON object of RunConfig fields) and print its summary as JSON."""
    config = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    apply_thread_setting()
    print(json.dumps(run_in_process(config)), flush=True)


if __name__ == "__main__":
    main()
