"""Data-parallel calibration over several processes with ``torch.distributed`` (issue 14).

ARCHITECTURE.md, "The solver side": every rank runs both calibration streams on its shard of the
calibration batches (batch ``b`` goes to rank ``b mod N``, so each batch, and its token clipping,
is the same as in one process). A group of layers that shares an input has its statistics
(:class:`~solver.math.stats.LayerStats`: sums plus token counts, which add exactly) reduced with
``SUM`` to the ranks that own its layers; each layer's owner, chosen by greedy bin packing on
``k^2`` over the whole run, solves it and broadcasts the pruned weight and its
:class:`~solver.events.LayerSolved` event, so every rank holds the same model and yields the same
events. Only rank 0 writes the run directory (its caller passes the others no ``workdir``).

The processes come from ``torchrun`` (or ``duogpt prune --nproc N``, which launches it): the
environment's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. The
backend is gloo on CPU and NCCL on CUDA. A cancel on any rank is seen by all at the next group
(one ``all_reduce`` of a flag). A collective that waits longer than :data:`TIMEOUT_S` (a rank
died) raises, and ``torchrun`` stops the other ranks when one exits with an error.

Not yet supported with several ranks (refused with one line): the threshold activation rule
(its quantile does not merge as a sum), fused-MoE expert groups, ``--resume``; per-block
checkpoints are not written. Evaluation is repeated on every rank.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from solver.config import RunConfig
from solver.errors import InputError
from solver.events import LayerSolved
from solver.math.stats import LayerStats
from solver.run.discovery import in_features, layer_weight
from solver.run.stop import CancelToken, RunCancelled

__all__ = ["TIMEOUT_S", "Ranks", "checked", "join", "launched_world", "owners_by_packing"]

TIMEOUT_S = 300
"""Seconds a rank waits in one collective (for a rank that died) before it fails the run."""


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

    Attributes:
        rank: this process's rank.
        world: how many ranks.
        starts: the global index of the first sequence of each batch of this rank's shard.
        loads: the solve cost (sum of ``k^2``) given to each rank so far (the bin packing).
    """

    rank: int
    world: int
    starts: list[int] = field(default_factory=list)
    loads: list[int] = field(default_factory=list)

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
        return batches[self.rank :: self.world]

    def cancelled(self, cancel: CancelToken, device: torch.device) -> None:
        """Stop every rank when any rank's cancel token is set (a collective: all ranks call it).

        Raises:
            RunCancelled: some rank was cancelled.
        """
        flag = torch.tensor([1 if cancel.is_set() else 0], device=_comm_device(device))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if int(flag.item()):
            raise RunCancelled("cancelled while pruning (on one of the ranks)")

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
            dist.broadcast(buffer, src=owner)
            if owner != self.rank:
                with torch.no_grad():
                    weight.copy_(buffer)
            box: list[LayerSolved | None] = [mine.get(name)]
            dist.broadcast_object_list(box, src=owner)
            event = box[0]
            assert event is not None
            yield event


def _comm_device(device: torch.device) -> torch.device:
    """Where the small tensors of a collective live: the device under NCCL, else the CPU."""
    if dist.get_backend() != "nccl":
        return torch.device("cpu")
    return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())


def join(device: torch.device) -> tuple[Ranks | None, torch.device]:
    """Join the launch's process group (once per process) when there are several ranks.

    Args:
        device: the run's device; on CUDA each rank takes ``cuda:LOCAL_RANK``.

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
    return Ranks(rank=dist.get_rank(), world=dist.get_world_size()), device


def checked(config: RunConfig, ranks: Ranks | None, resume: bool) -> RunConfig:
    """The run's configuration with its rank count recorded (``nproc``), once it can run so.

    Raises:
        InputError: ``nproc`` asks for ranks that were not launched, or the run uses what
            several ranks do not support yet.
    """
    world = 1 if ranks is None else ranks.world
    if ranks is None:
        if config.nproc > 1:
            raise InputError(
                f"--nproc {config.nproc} needs its ranks launched: run it through "
                "`duogpt prune --nproc N` or under torchrun"
            )
        return config
    if config.act_rule == "threshold" and config.act_sparsity > 0:
        raise InputError(
            "--act-rule threshold cannot be calibrated with several ranks yet: use topk"
        )
    if resume:
        raise InputError("a run with several ranks cannot be resumed yet: start it again")
    return config.replace(nproc=world)
