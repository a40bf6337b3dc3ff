"""The interface every load-balancing scheme implements (one nn.Module per MoE layer).

A scheme is a module so that whatever state it keeps (DeepSeek-V3's selection bias) is a buffer
of the model: saved in checkpoints and artifacts, resumed exactly, exported. The trainer calls
the two step hooks with the step's expert counts summed over its micro-batches and DDP ranks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, TypeVar

from torch import Tensor, nn

from moectl.model.router import Assignment

if TYPE_CHECKING:
    from moectl.config import MoEConfig

SchemeType = TypeVar("SchemeType", bound="type[Balance]")
# Every selectable scheme by its name; `register` fills it (moectl.model.balance.SCHEMES).
REGISTERED: dict[str, type[Balance]] = {}


def register(scheme: SchemeType) -> SchemeType:
    """Class decorator: `scheme` is selectable as moe.balance=<scheme.name>. Explicit, so a
    subclass of another scheme registers just as a direct subclass of Balance does."""
    name = scheme.__dict__.get("name")
    if name is None:
        raise TypeError(f"{scheme.__name__} needs its own `name` to be registered")
    if name in REGISTERED and REGISTERED[name] is not scheme:
        raise TypeError(f"two balancing schemes are named '{name}'")
    REGISTERED[name] = scheme
    return scheme


class Balance(nn.Module):
    """What a load-balancing scheme does: an aux loss, a selection bias, step hooks, state.

    `adds_loss`: whether `aux_loss` can be non-zero; `aux_loss_coef` is what an export records
    as the weight of its LB loss. `selects_with_bias`: whether `selection_bias` changes which
    experts inference chooses (an export must then carry it: custom code, no native class).
    `counts_before_step`: the trainer hands `begin_step` the optimizer step's global expert
    counts before any of the step's forwards (a routing-only pass).
    `counts_after_step`: it hands `end_step` the counts the step's forwards made, after the
    optimizer step.
    """

    name: ClassVar[str]
    adds_loss: ClassVar[bool] = True
    selects_with_bias: ClassVar[bool] = False
    counts_before_step: ClassVar[bool] = False
    counts_after_step: ClassVar[bool] = False

    def __init__(self, n_experts: int) -> None:
        super().__init__()
        self.n_experts = n_experts

    @classmethod
    def from_config(cls, n_experts: int, moe: MoEConfig) -> Balance:
        """The scheme for a layer of `n_experts` routed experts, with its moe.* settings."""
        return cls(n_experts)

    @classmethod
    def aux_loss_coef(cls, moe: MoEConfig) -> float:
        """The weight the aux loss trains with, which an export records as
        `router_aux_loss_coef`: moe.lb_coef times any factor `aux_loss` itself carries (a scheme
        whose loss is the Switch loss x 10 returns 10 * moe.lb_coef); 0.0 without `adds_loss`."""
        return moe.lb_coef if cls.adds_loss else 0.0

    @classmethod
    def setting(cls, moe: MoEConfig) -> str:
        """How strongly this scheme balances, in a few words, for inspect, the report and the
        model card (a loss-based scheme: its coefficient)."""
        return f"lb {moe.lb_coef:g}"

    def config_fields(self) -> dict[str, object]:
        """The moe.* settings that rebuild this scheme (`from_config`'s inverse), for a model
        saved without its MoEConfig."""
        return {"balance": self.name}

    def aux_loss(self, assignment: Assignment) -> Tensor:
        """The loss this scheme adds for one forward (scaled by moe.lb_coef); 0 for none."""
        return assignment.logits.new_zeros(())

    def selection_bias(self) -> Tensor | None:
        """(E,) added to the router's scores for the top-k choice only, or None."""
        return None

    def begin_step(self, counts: Tensor | None) -> None:
        """The step's global expert counts (E,), or None when its forwards see them all."""

    def end_step(self, counts: Tensor) -> None:
        """The expert counts (E,) of the step just taken, summed over micro-batches and ranks."""

    def state(self) -> dict[str, float]:
        """The scheme's own state for the routing log and the trackers (empty if none)."""
        return {}

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}"
