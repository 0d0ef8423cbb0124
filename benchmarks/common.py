"""Shared code of the benchmark scripts (issue 4): run configurations, collect, write Markdown.

Each benchmark script builds a list of ``(label, RunConfig)``, runs them one at a time through
:func:`solver.pipeline.run` — each in a fresh Python process by default, so that the peak RSS of
one run is not inflated by the ones before it — and writes a table as Markdown together with the
exact command, the protocol, the machine (cpu count, torch threads, load) and the date.

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
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
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
    from solver.models import load_model, model_cache_dir

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


def protocol_text(base: dict[str, Any], quick: bool) -> str:
    """One paragraph that says how every figure of a table was measured."""
    model = (
        f"SmolLM2-135M cut to its first {QUICK_BLOCKS} decoder blocks (quick check only)"
        if quick
        else "SmolLM2-135M (30 decoder blocks, float32)"
    )
    return (
        f"Model {model}; calibration {base['nsamples']} x {base['seqlen']} tokens of "
        f"`{base['calib']}` (seed {base['seed']}); perplexity on {base['eval_windows']} "
        f"non-overlapping windows of {base['seqlen']} tokens of `{base['eval']}`, activation "
        "sparsity on for every token (per-token top-k unless stated); device "
        f"`{base['device']}` with {_threads_text()}; one run at a time, each in a fresh process "
        "unless stated. Weight "
        "sparsity is per layer over the decoder blocks' linear layers; activation sparsity is "
        "the measured fraction of zeroed inputs during the final evaluation."
    )


def _threads_text() -> str:
    threads = os.environ.get(THREADS_ENV)
    return f"{threads} torch thread(s)" if threads else "torch's default threads"


# --------------------------------------------------------------------- running


def run_in_process(config: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration here and return its summary (see :func:`summarize`)."""
    from solver.config import RunConfig
    from solver.pipeline import run

    cfg = RunConfig.from_dict({**config, **NO_FILES})
    tick = time.monotonic()
    events = list(run(cfg))
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
    """The figures a benchmark table needs, from one run's events."""
    from solver import events as ev
    from solver import speedup

    out: dict[str, Any] = {"status": "incomplete", "wall_s": round(wall, 2)}
    for event in events:
        if isinstance(event, ev.RunStarted):
            out["n_params"] = event.n_params
            out["dtype"] = event.dtype
            out["n_blocks"] = event.n_blocks
            out["calib_tokens"] = event.calib.get("tokens")
        if isinstance(event, ev.PerplexityMeasured) and event.label != "proxy":
            out[f"ppl_{event.label}"] = event.ppl
            if event.label == "pruned":
                out["eval_act_sparsity"] = event.act_sparsity
    layers = [e for e in events if isinstance(e, ev.LayerSolved)]
    out["solve_s"] = round(sum(e.seconds for e in layers), 3)
    out["layers"] = len(layers)
    decode = [e.decode for e in layers if e.decode]
    if decode:
        ratios = speedup.speedups(speedup.total(decode))
        out["speedup_bytes"] = {m: ratios[m]["bytes"] for m in speedup.MODES}
    last = events[-1] if events else None
    if isinstance(last, ev.Finished):
        out.update(
            status="finished",
            seconds=round(last.seconds, 2),
            weight_sparsity=last.weight_sparsity,
            act_sparsity=last.act_sparsity,
            peak_rss_mb=round(last.peak_memory_mb, 1),
            timings=dict(last.timings),
        )
    elif isinstance(last, ev.Failed | ev.Cancelled):
        out["status"] = last.kind
        out["error"] = getattr(last, "error", "") or getattr(last, "reason", "")
    return out


def run_all(
    runs: Sequence[tuple[str, dict[str, Any]]],
    *,
    isolate: bool = True,
    on_result: Callable[[str, dict[str, Any]], None] | None = None,
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Run ``(label, config)`` pairs one at a time; ``(label, config, summary)`` per run."""
    results = []
    for index, (label, config) in enumerate(runs, 1):
        print(f"[{index}/{len(runs)}] {label} (load {_load():.2f})", file=sys.stderr, flush=True)
        summary = run_isolated(config) if isolate else run_in_process(config)
        summary["load_after"] = round(_load(), 2)
        results.append((label, config, summary))
        if on_result is not None:
            on_result(label, summary)
        status = summary.get("status")
        ppl = summary.get("ppl_pruned", summary.get("ppl_dense"))
        print(
            f"    {status}: ppl {fmt(ppl)}, {fmt(summary.get('seconds'), 1)} s, "
            f"peak {fmt(summary.get('peak_rss_mb'), 0)} MB",
            file=sys.stderr,
            flush=True,
        )
    return results


# --------------------------------------------------------------------- the machine


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


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
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
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
        "--in-process",
        action="store_true",
        help="run every configuration in this process (faster start, peak RSS not per run)",
    )
    return parser


def command_line() -> str:
    """The command that is running, as a shell line."""
    argv = [".venv/bin/python", *sys.argv]
    if argv[1].endswith(".py"):
        argv[1] = os.path.relpath(argv[1], ROOT)
    return shlex.join(argv)


def fmt(value: Any, digits: int = 2) -> str:
    """A number for a table cell; ``n/a`` for missing."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: Any) -> str:
    """A fraction as a percentage."""
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


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
) -> str:
    """The Markdown file of one benchmark: title, command, protocol, machine, date, sections."""
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
    for section in sections:
        lines += [section.rstrip("\n"), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


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
