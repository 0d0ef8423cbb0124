"""How long the built-in zero-shot tasks take at their default limits (issue 12: under 2 minutes
on 2 cores for the default model), next to the default perplexity evaluation.

Loads the default model once, measures the perplexity of 16 x 256 tokens of ``moby-dick`` and
then every built-in task, and prints wall and CPU seconds and the scores.

    .venv/bin/python benchmarks/task_speed.py [--threads 1]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    import torch

    from solver.io.data import eval_sample, load_text
    from solver.io.models import load_model
    from solver.io.tasks import BUILTIN_TASKS
    from solver.run.perplexity import perplexity
    from solver.run.tasks import run_tasks

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    name, text = load_text("moby-dick")
    sample = eval_sample(loaded.tokenizer, text, 16, 256, name=name)
    wall, cpu = time.monotonic(), cpu_seconds()
    ppl = perplexity(loaded.model, sample.windows, batch_size=8)
    print(
        f"perplexity, 16 x 256 tokens: {ppl:.2f} in {time.monotonic() - wall:.1f} s "
        f"({cpu_seconds() - cpu:.1f} CPU s)"
    )
    total_wall, total_cpu = time.monotonic(), cpu_seconds()
    for task in BUILTIN_TASKS.values():
        wall, cpu = time.monotonic(), cpu_seconds()
        scores = run_tasks(loaded.model, loaded.tokenizer, [task.name], batch_size=8)[task.name]
        print(
            f"{task.name}: acc {scores['acc']:.3f} (chance {task.chance:.2f}), n {scores['n']}, "
            f"{time.monotonic() - wall:.1f} s ({cpu_seconds() - cpu:.1f} CPU s)"
        )
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(
        f"all built-in tasks at their default limits: {time.monotonic() - total_wall:.1f} s "
        f"({cpu_seconds() - total_cpu:.1f} CPU s), {torch.get_num_threads()} thread(s), "
        f"load average {load}"
    )


if __name__ == "__main__":
    main()
