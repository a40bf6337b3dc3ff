"""`none`: no load balancing at all (the router is free to collapse; a control)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moectl.model.balance.base import Balance, register

if TYPE_CHECKING:
    from moectl.config import MoEConfig


@register
class NoBalance(Balance):
    """Adds no loss and keeps no state: every hook is the interface's no-op."""

    name = "none"
    adds_loss = False

    @classmethod
    def setting(cls, moe: MoEConfig) -> str:
        return "no balancing"
