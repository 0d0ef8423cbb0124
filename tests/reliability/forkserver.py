"""A fork server for ``duogpt`` child processes, so that the suite pays the imports once.

Starting ``duogpt prune`` costs seconds of CPU before it does anything (torch, transformers).
The server is one child interpreter that does those imports once and then, per request, forks a
fresh process that runs ``duogpt``'s real ``main()`` with the given arguments, in the given
folder, with stdout and stderr going to files. Each forked process is an ordinary process with
its own pid: the tests signal it, ``kill -9`` it and read its exit code like any other. The
server runs nothing but imports before forking, so no thread pool is copied into the children.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SERVER = r"""
import json, os, signal, sys, traceback
import duogpt_tui.cli, duogpt_tui.runner, solver.run.pipeline, solver.io.models, solver.io.data
import solver.run.perplexity, solver.run.evaluate, solver.io.checkpoint
import transformers.models.llama.modeling_llama
from duogpt_tui.cli import main

for line in sys.stdin:
    request = json.loads(line)
    if request["op"] == "wait":
        _, status = os.waitpid(request["pid"], 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
        continue
    pid = os.fork()
    if pid:
        print(json.dumps({"pid": pid}), flush=True)
        continue
    code = 1
    try:
        os.chdir(request["cwd"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = ["duogpt", *request["args"]]
        try:
            main()
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
"""


class ForkServer:
    """The server process; :meth:`start` forks a ``duogpt`` process, :meth:`wait` reaps it."""

    def __init__(self, root: Path) -> None:
        """Start the server (its imports take a few seconds, paid once)."""
        env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def _ask(self, request: Mapping[str, object]) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, "the fork server died"
        reply: dict[str, int] = json.loads(answer)
        return reply

    def start(self, cwd: Path, stdout: Path, stderr: Path, args: list[str]) -> int:
        """Fork ``duogpt ARGS`` in ``cwd``; return its pid."""
        request = {
            "op": "start",
            "cwd": str(cwd),
            "stdout": str(stdout),
            "stderr": str(stderr),
            "args": args,
        }
        return self._ask(request)["pid"]

    def wait(self, pid: int) -> int:
        """Wait for a forked process; its exit code (``-N`` when killed by signal N)."""
        return self._ask({"op": "wait", "pid": pid})["code"]

    def close(self) -> None:
        """Stop the server (its forked processes are reaped by init if still running)."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
