"""Load-balancing schemes: each one small module, selectable by its `name`.

A scheme is a `Balance` (moectl.model.balance.base) marked `@register`: the aux loss it adds to
a layer's forward (and the weight an export records for it, `aux_loss_coef`), the selection bias
it lends the router, and what it does with the optimizer step's expert counts before (`global`)
or after (`bias`) the step. Adding one means a module in this package, its name in
`MoEConfig.balance` and, if it changes inference, the exported modeling files.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from moectl.model.balance.base import REGISTERED, Balance

if TYPE_CHECKING:
    from moectl.config import MoEConfig


def _schemes() -> dict[str, type[Balance]]:
    """Every module of this package imported, so each registers its schemes."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return dict(REGISTERED)


SCHEMES = _schemes()


def make_balance(moe: MoEConfig, n_experts: int) -> Balance:
    """The scheme moe.balance names, for a layer of `n_experts` routed experts."""
    return SCHEMES[moe.balance].from_config(n_experts, moe)


def balance_setting(moe: MoEConfig) -> str:
    """How moe.balance balances, in a few words: `lb 0.01`, `bias rate 0.001, no LB loss`."""
    return SCHEMES[moe.balance].setting(moe)
