"""Data-parallel calibration over several processes with ``torch.distributed`` (issue 14).

ARCHITECTURE.md, "The solver side": every rank runs both calibration streams on its shard of the
calibration batches (batch ``b`` goes to rank ``b mod N``, so each batch, and its token clipping,
is the same as in one process). A group of layers that shares an input has its statistics
(:class:`~solver.math.stats.LayerStats`: sums plus token counts, which add exactly) reduced with
``SUM`` to the ranks that own its layers; each layer's owner, chosen by greedy bin packing on
``k^2`` over the whole run, solves it and broadcasts the pruned weight and its
:class:`~solver.events.LayerSolved` event, so every rank holds the same model and yields the same
events. What does not merge as a sum is shared whole: the threshold activation rule's quantile is
taken over every rank's inputs (:meth:`Ranks.gather_rows`), and the routed-token count of each
fused-MoE expert slice is summed before it picks its method. Only rank 0 writes into the run
directory (the pruned model, and the per-block checkpoints, whose streams rank 0 gathers from the
others in the global batch order, so that a run resumes with any number of ranks); the other
ranks only read it (a resumed run's checkpoint). Only rank 0 evaluates the pruned model
(:mod:`solver.run.measure`).

The processes come from ``torchrun`` (or ``duogpt prune --nproc N``, which launches them): the
environment's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. The
backend is gloo on CPU and NCCL on CUDA. A cancel on any rank is seen by all at the next group
(one ``all_reduce`` of a flag). A rank that loses the others (one died, or stopped answering for
:data:`TIMEOUT_S` seconds inside a collective) fails the run with one line (a
:class:`~solver.errors.RunError`); ``duogpt prune --nproc N`` also stops the other ranks as soon
as one dies.

Held-out alpha selection numbers the routed tokens of an expert slice per rank (the sequences of
dense layers are numbered over all ranks, as in one process).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from solver.config import RunConfig
from solver.errors import InputError, RunError
from solver.events import LayerSolved
from solver.math.stats import LayerStats
from solver.run.discovery import in_features, layer_weight
from solver.run.stop import NEVER, CancelToken, RunCancelled

__all__ = ["TIMEOUT_S", "Ranks", "checked", "join", "launched_world", "owners_by_packing"]

TIMEOUT_S = 600
"""Seconds a rank waits inside one collective before it gives the others up and fails the run.

A rank that *dies* is noticed at once (its connections close, and ``duogpt prune --nproc N``
stops the others as soon as one exits); this bounds the wait for a rank that hangs. It must
exceed the longest stretch one rank works alone: the solves of the layers it owns in one group.
"""

T = TypeVar("T")


def launched_world() -> int:
    """The number of ranks this process was launched with (1 outside ``torchrun``)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def owners_by_packing(costs: Sequence[tuple[str, int]], loads: list[int]) -> dict[str, int]:
    """Greedy bin packing: each item, largest first, to the least-loaded rank (``loads`` grows).

    Deterministic (ties by name, then the lowest rank), so every rank computes the same plan.
    """
    owners: dict[str, int] = {}
    for name, cost in sorted(costs, key=lambda item: (-item[1], item[0])):
        rank = min(range(len(loads)), key=lambda r: (loads[r], r))
        owners[name] = rank
        loads[rank] += cost
    return owners


@dataclass
class Ranks:
    """This process's place among the ranks of one run.

    Every method that exchanges data is a collective: all ranks call it, in the same order.

    Attributes:
        rank: this process's rank.
        world: how many ranks.
        starts: the global index of the first sequence of each batch of this rank's shard.
        loads: the solve cost (sum of ``k^2``) given to each rank so far (the bin packing).
        cancel: the run's cancel token: a rank that loses the others after a cancel ends
            cancelled, not failed (the others may have stopped first).
    """

    rank: int
    world: int
    starts: list[int] = field(default_factory=list)
    loads: list[int] = field(default_factory=list)
    cancel: CancelToken = NEVER

    def __post_init__(self) -> None:
        """Start every rank with no load."""
        if not self.loads:
            self.loads = [0] * self.world

    def shard(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """This rank's calibration batches (every ``world``-th, from its rank on).

        Raises:
            InputError: fewer batches than ranks.
        """
        if len(batches) < self.world:
            raise InputError(
                f"{len(batches)} calibration batches cannot feed {self.world} ranks: use more "
                f"--nsamples, a smaller --batch-size, or fewer --nproc"
            )
        firsts = [0]
        for batch in batches[:-1]:
            firsts.append(firsts[-1] + int(batch.shape[0]))
        self.starts = firsts[self.rank :: self.world]
        return self.mine(batches)

    def mine(self, items: Sequence[T]) -> list[T]:
        """This rank's share of per-batch items listed in the global batch order."""
        return list(items[self.rank :: self.world])

    @contextmanager
    def talking(self, what: str) -> Iterator[None]:
        """Turn a failed exchange (a rank died, or :data:`TIMEOUT_S` passed) into one line.

        Raises:
            RunCancelled: the exchange failed after this run was cancelled.
            RunError: it failed otherwise: the run cannot go on.
        """
        try:
            yield
        except RuntimeError as err:  # gloo and NCCL raise RuntimeError subclasses
            if self.cancel.is_set():
                raise RunCancelled("cancelled while pruning (on one of the ranks)") from err
            raise RunError(
                f"rank {self.rank} lost the other ranks while {what} ({_short(err)}): a rank "
                f"died, or did not answer for {TIMEOUT_S} s; continue the run with --resume "
                "(from its last checkpointed block)"
            ) from err

    def cancelled(self, cancel: CancelToken, device: torch.device) -> None:
        """Stop every rank when any rank's cancel token is set (a collective: all ranks call it).

        Raises:
            RunCancelled: some rank was cancelled.
        """
        flag = torch.tensor([1 if cancel.is_set() else 0], device=_comm_device(device))
        with self.talking("checking for a cancel"):
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag.item()):
            raise RunCancelled("cancelled while pruning (on one of the ranks)")

    def agree(self, value: bool, device: torch.device) -> bool:
        """Rank 0's ``value`` on every rank."""
        flag = torch.tensor([1 if value else 0], device=_comm_device(device))
        with self.talking("starting"):
            dist.broadcast(flag, src=0)
        return bool(flag.item())

    def sum_counts(self, counts: Sequence[int], device: torch.device) -> list[int]:
        """Integer counts summed over the ranks (each rank gives the same number of them)."""
        total = torch.tensor(list(counts), dtype=torch.long, device=_comm_device(device))
        with self.talking("counting routed tokens"):
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return [int(v) for v in total.cpu()]

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's ``[n_r, k]`` rows, in rank order (``n_r`` may differ, even be 0).

        Returned in float32 on the device the collective uses (the CPU under gloo).
        """
        comm = _comm_device(rows.device)
        mine = rows.detach().float().to(comm)
        sizes = [torch.zeros(1, dtype=torch.long, device=comm) for _ in range(self.world)]
        with self.talking("sharing activations"):
            dist.all_gather(sizes, torch.tensor([mine.shape[0]], dtype=torch.long, device=comm))
            most = max(int(n.item()) for n in sizes)
            padded = torch.zeros(most, mine.shape[1], device=comm)
            padded[: mine.shape[0]] = mine
            parts = [torch.empty_like(padded) for _ in range(self.world)]
            dist.all_gather(parts, padded)
        return torch.cat([p[: int(n.item())] for p, n in zip(parts, sizes, strict=True)])

    def gather_batches(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Every rank's per-batch tensors on rank 0, on the CPU, in the global batch order.

        The other ranks get an empty list.
        """
        mine = [t.detach().cpu() for t in tensors]
        shards: list[list[torch.Tensor] | None] = [None] * self.world if self.rank == 0 else []
        with self.talking("gathering the streams for the checkpoint"):
            dist.gather_object(mine, shards if self.rank == 0 else None, dst=0)
        if self.rank != 0:
            return []
        full = [s or [] for s in shards]
        total = sum(len(s) for s in full)
        return [full[b % self.world][b // self.world] for b in range(total)]

    def plan(self, group: Sequence[str], linears: dict[str, nn.Module]) -> dict[str, int]:
        """Each layer of a group to its owner rank (bin packing on ``k^2`` over the run)."""
        costs = [(name, in_features(linears[name]) ** 2) for name in group]
        return owners_by_packing(costs, self.loads)

    def reduce(self, parts: Sequence[LayerStats | None], owners: dict[str, int]) -> None:
        """Sum ``parts`` (the group's statistics) over the ranks, in place, onto the owners.

        One owner receives a ``reduce``; a group whose layers have several owners an
        ``all_reduce``. Other ranks' copies are left undefined.
        """
        targets = set(owners.values())
        for stats in parts:
            if stats is None:
                continue
            stats.materialise()  # every rank reduces the same three matrices
            device = stats.H_sum.device
            comm = _comm_device(device)
            k = stats.k
            counts = torch.zeros(3 + k, dtype=torch.long)
            counts[:3] = torch.tensor([stats.count, stats.zeros, stats.entries])
            if stats.channel_nonzeros.numel() == k:
                counts[3:] = stats.channel_nonzeros
            counts = counts.to(comm)
            with self.talking("summing the statistics"):
                for tensor in (stats.H_sum, stats.G_sum, stats.D_sum, counts):
                    if len(targets) == 1:
                        dist.reduce(tensor, dst=next(iter(targets)), op=dist.ReduceOp.SUM)
                    else:
                        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            counts = counts.cpu()
            stats.count, stats.zeros, stats.entries = (int(v) for v in counts[:3])
            stats.channel_nonzeros = counts[3:].clone()

    def solve_group(
        self,
        group: Sequence[str],
        linears: dict[str, nn.Module],
        owners: dict[str, int],
        solve: Callable[[str], LayerSolved],
    ) -> Iterator[LayerSolved]:
        """Solve this rank's layers of a group, then share every layer's weight and event.

        Every rank first solves the layers it owns (so the owners work at the same time), then,
        layer by layer in the group's order, the owner broadcasts the pruned weight (in the
        model's dtype, so all ranks hold identical weights) and its event, which every rank
        yields.
        """
        mine = {name: solve(name) for name in group if owners[name] == self.rank}
        for name in group:
            owner = owners[name]
            weight = layer_weight(linears[name])
            buffer = weight.detach().contiguous()
            box: list[LayerSolved | None] = [mine.get(name)]
            with self.talking("sharing the pruned weights"):
                dist.broadcast(buffer, src=owner)
                dist.broadcast_object_list(box, src=owner)
            if owner != self.rank:
                with torch.no_grad():
                    weight.copy_(buffer)
            event = box[0]
            assert event is not None
            yield event


def _short(err: BaseException) -> str:
    """The first line of a communication error, without gloo's ``[file:line]`` prefix."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text if len(text) <= 120 else text[:117] + "..."


def _comm_device(device: torch.device) -> torch.device:
    """Where the small tensors of a collective live: the device under NCCL, else the CPU."""
    if dist.get_backend() != "nccl":
        return torch.device("cpu")
    return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())


def join(device: torch.device, cancel: CancelToken = NEVER) -> tuple[Ranks | None, torch.device]:
    """Join the launch's process group (once per process) when there are several ranks.

    Args:
        device: the run's device; on CUDA each rank takes ``cuda:LOCAL_RANK``.
        cancel: the run's cancel token (see :attr:`Ranks.cancel`).

    Returns:
        This process's :class:`Ranks` (None with one rank) and the device it runs on.
    """
    world = launched_world()
    if world <= 1:
        return None, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=timedelta(seconds=TIMEOUT_S),
        )
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size(), cancel=cancel), device


def checked(config: RunConfig, ranks: Ranks | None) -> RunConfig:
    """The run's configuration with its rank count recorded (``nproc``).

    Raises:
        InputError: ``nproc`` asks for ranks that were not launched.
    """
    if ranks is None:
        if config.nproc > 1:
            raise InputError(
                f"--nproc {config.nproc} needs its ranks launched: run it through "
                "`duogpt prune --nproc N` or under torchrun"
            )
        return config
    return config.replace(nproc=ranks.world)
