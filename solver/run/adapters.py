"""Model-family adapters: where a causal LM keeps its decoder blocks and prunable layers.

ALGORITHM.md §1 and §6: the pipeline walks decoder blocks and prunes the ``nn.Linear`` layers
inside them in "true sequential" groups that share an input ([q, k, v] -> [o] -> [gate, up] ->
[down] for LLaMA). Everything family-specific lives here, discovered from the model object, so
the driver in :mod:`solver.run.pipeline` stays generic.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from solver.errors import InputError

#: Model types whose decoder blocks have the LLaMA layout (q/k/v/o attention, gated MLP).
LLAMA_LIKE = frozenset(
    {"llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo", "olmo2", "granite", "ministral"}
)

LLAMA_GROUPS: tuple[tuple[str, ...], ...] = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)


@dataclass(frozen=True)
class ModelAdapter:
    """How to reach the decoder blocks of one model family.

    Attributes:
        family: the model type (``llama``, ``qwen2``...).
        groups: the prunable linear layers of a block, by name inside the block, in execution
            order, grouped by shared input (every group's layers see the same input tensor).
    """

    family: str
    groups: tuple[tuple[str, ...], ...] = LLAMA_GROUPS

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The decoder blocks (``model.model.layers``)."""
        return model.model.layers  # type: ignore[union-attr,return-value]

    @property
    def layer_names(self) -> tuple[str, ...]:
        """All prunable layer names inside a block, in execution order."""
        return tuple(name for group in self.groups for name in group)

    def linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """The prunable linear layers of one block, by name."""
        return {name: block.get_submodule(name) for name in self.layer_names}  # type: ignore[misc]

    def all_linears(self, model: nn.Module) -> dict[str, nn.Linear]:
        """Every prunable linear layer, by full name (``model.layers.3.mlp.up_proj``)."""
        out: dict[str, nn.Linear] = {}
        for index, block in enumerate(self.blocks(model)):
            for name, module in self.linears(block).items():
                out[f"model.layers.{index}.{name}"] = module
        return out


def layer_type(name: str) -> str:
    """Short layer type for plots and tables: ``self_attn.q_proj`` -> ``q``."""
    last = name.rsplit(".", 1)[-1]
    return last.removesuffix("_proj")


def find_adapter(model: nn.Module) -> ModelAdapter:
    """The adapter for ``model``.

    Raises:
        InputError: the family has no adapter, or the model does not have the expected layout.
    """
    config = getattr(model, "config", None)
    model_type = str(getattr(config, "model_type", type(model).__name__))
    if model_type not in LLAMA_LIKE:
        raise InputError(
            f"model family {model_type!r} is not supported yet: use a LLaMA-family model "
            f"({', '.join(sorted(LLAMA_LIKE))})"
        )
    adapter = ModelAdapter(family=model_type)
    try:
        blocks = adapter.blocks(model)
        linears = adapter.linears(blocks[0])
    except (AttributeError, IndexError) as err:
        raise InputError(
            f"model of type {model_type!r} does not have the expected decoder layout ({err}); "
            "use a standard LLaMA-family checkpoint"
        ) from err
    if not all(isinstance(m, nn.Linear) for m in linears.values()):
        raise InputError(
            f"model of type {model_type!r} has non-Linear projection layers "
            "(already quantised?); use a float checkpoint"
        )
    return adapter
