"""Model-family adapters: where a causal LM keeps its decoder blocks and prunable layers.

ALGORITHM.md §1 and §6: the pipeline walks decoder blocks and prunes the linear projections
inside them in "true sequential" groups that share an input ([q, k, v] -> [o] -> [gate, up] ->
[down] for LLaMA). Nothing here is tabled per family: :func:`find_adapter` discovers the block
list, the projections (``nn.Linear``, ``Conv1D``, fused projections, expert slices) and the
groups by tracing the model (:mod:`solver.run.discovery`), so the driver in
:mod:`solver.run.pipeline` stays generic.
"""

from __future__ import annotations

from torch import nn

from solver.errors import InputError
from solver.run import discovery
from solver.run.discovery import BlockLayout, Group

__all__ = ["ModelAdapter", "find_adapter", "layer_type"]

LAYER_TYPES = {
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "out_proj": "o",
    "qkv_proj": "qkv",
    "query_key_value": "qkv",
    "c_attn": "qkv",
    "Wqkv": "qkv",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
    "gate_up_proj": "gate_up",
    "fc1": "fc1",
    "fc2": "fc2",
    "c_fc": "fc1",
    "fc_in": "fc1",
    "fc_out": "fc2",
    "dense_h_to_4h": "fc1",
    "dense_4h_to_h": "fc2",
}
"""Display types of well-known projection names (plots and tables group layers by type)."""

_OUTPUT_NAMES = frozenset({"dense", "c_proj", "out_proj", "o_proj"})


def layer_type(name: str) -> str:
    """Short layer type for plots and tables.

    ``self_attn.q_proj`` -> ``q``, ``attn.c_attn`` -> ``qkv``, ``mlp.fc1`` -> ``fc1``,
    ``attention.dense`` -> ``o``, ``mlp.c_proj`` -> ``fc2``, ``mlp.experts.3.down_proj`` ->
    ``experts``; otherwise the last name part without ``_proj``.
    """
    parts = name.split(".")
    last = parts[-1]
    if "experts" in parts[:-1] and len(parts) >= 3 and parts[-2].isdigit():
        return "experts"
    if last in _OUTPUT_NAMES:
        parent = parts[-2] if len(parts) > 1 else ""
        return "o" if "att" in parent or last == "o_proj" else "fc2"
    return LAYER_TYPES.get(last, last.removesuffix("_proj"))


class ModelAdapter:
    """How to reach the decoder blocks and prunable layers of one loaded model.

    Attributes:
        family: the model type (``llama``, ``gpt2``, ``mixtral``...).
        path: the block list's name in the model (``model.layers``, ``transformer.h``).
        layouts: per block, its groups of prunable layers.
        skipped: modules that look prunable but are left alone, with why.
    """

    def __init__(
        self,
        family: str,
        path: str,
        blocks: nn.ModuleList,
        layouts: list[BlockLayout],
        skipped: dict[str, str] | None = None,
    ) -> None:
        self.family = family
        self.path = path
        self.layouts = tuple(layouts)
        self.skipped = dict(skipped or {})
        self._blocks = blocks

    def blocks(self, model: nn.Module | None = None) -> nn.ModuleList:
        """The decoder blocks."""
        return self._blocks

    def layout(self, index: int) -> BlockLayout:
        """Block ``index``'s groups."""
        return self.layouts[index]

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """Block 0's prunable layer names, grouped by shared input, in execution order."""
        return tuple(group.names for group in self.layouts[0].groups)

    def block_groups(self, index: int) -> tuple[Group, ...]:
        """Block ``index``'s groups."""
        return self.layouts[index].groups

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Block 0's prunable layer names inside the block, in execution order."""
        return self.layouts[0].names

    def index(self, block: nn.Module) -> int:
        """The index of a decoder block."""
        for i, entry in enumerate(self._blocks):
            if entry is block:
                return i
        raise ValueError("not a decoder block of this model")

    def linears(self, block: nn.Module) -> dict[str, nn.Module]:
        """The prunable layers of one block, by name inside the block, in execution order.

        Each is an ``nn.Linear``, a ``Conv1D`` (weight stored ``[in, out]``) or an expert slice
        (:class:`~solver.run.experts.ExpertSlice`); :func:`~solver.run.discovery.layer_weight`
        gives any of them as ``[out, in]``.
        """
        layout = self.layouts[self.index(block)]
        return dict(discovery.iter_layers(block, layout))

    def prefix(self, index: int) -> str:
        """The full-name prefix of block ``index``'s layers (``model.layers.3.``)."""
        return f"{self.path}.{index}."

    def all_linears(self, model: nn.Module | None = None) -> dict[str, nn.Module]:
        """Every prunable layer, by full name (``model.layers.3.mlp.up_proj``)."""
        out: dict[str, nn.Module] = {}
        for index, block in enumerate(self._blocks):
            for name, module in discovery.iter_layers(block, self.layouts[index]):
                out[f"{self.prefix(index)}{name}"] = module
        return out

    def describe(self) -> str:
        """The family, the block list and block 0's groups, in one line."""
        kinds = {layout.describe() for layout in self.layouts}
        groups = self.layouts[0].describe()
        more = f" ({len(kinds)} block layouts)" if len(kinds) > 1 else ""
        return f"{self.family}: {len(self._blocks)} blocks in {self.path}; groups {groups}{more}"


def find_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``, discovered by tracing it (:mod:`solver.run.discovery`).

    Fused experts modules are made prunable on the way (:func:`solver.run.experts.install`).

    Raises:
        InputError: the model has no decoder block list, or a layout that cannot be pruned
            (quantised projections, an unknown experts layout).
    """
    config = getattr(model, "config", None)
    model_type = str(getattr(config, "model_type", type(model).__name__))
    _refuse_quantised(model, model_type)
    found = discovery.discover(model)
    blocks = model.get_submodule(found.path)
    assert isinstance(blocks, nn.ModuleList)
    return ModelAdapter(model_type, found.path, blocks, found.layouts, found.skipped)


def _refuse_quantised(model: nn.Module, model_type: str) -> None:
    """Projections that are not float tensors (already quantised) cannot be solved."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if discovery.is_projection(module) and (
            weight is None or not weight.dtype.is_floating_point
        ):
            raise InputError(
                f"model of type {model_type!r} has non-float projection weights (already "
                "quantised?); use a float checkpoint"
            )
