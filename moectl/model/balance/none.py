"""`none`: no load balancing at all (the router is free to collapse; a control)."""

from __future__ import annotations

from moectl.model.balance.base import Balance


class NoBalance(Balance):
    """Adds no loss and keeps no state: every hook is the interface's no-op."""

    name = "none"
    adds_loss = False
