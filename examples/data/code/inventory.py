"""Track stock levels of a small shop and report what needs reordering."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field


@dataclass
class Item:
    sku: str
    name: str
    quantity: int
    reorder_level: int
    suppliers: list[str] = field(default_factory=list)

    @property
    def needs_reorder(self) -> bool:
        return self.quantity <= self.reorder_level


class Inventory:
    def __init__(self) -> None:
        self._items: dict[str, Item] = {}

    def add(self, item: Item) -> None:
        if item.sku in self._items:
            raise KeyError(f"duplicate SKU {item.sku}")
        self._items[item.sku] = item

    def receive(self, sku: str, amount: int) -> int:
        if amount <= 0:
            raise ValueError("amount must be positive")
        item = self._items[sku]
        item.quantity += amount
        return item.quantity

    def sell(self, sku: str, amount: int) -> int:
        item = self._items[sku]
        if amount > item.quantity:
            raise ValueError(f"only {item.quantity} of {item.name} left")
        item.quantity -= amount
        return item.quantity

    def reorder_report(self) -> list[Item]:
        return sorted(
            (item for item in self._items.values() if item.needs_reorder),
            key=lambda item: item.quantity - item.reorder_level,
        )

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["sku", "name", "quantity", "reorder_level"])
        for item in sorted(self._items.values(), key=lambda item: item.sku):
            writer.writerow([item.sku, item.name, item.quantity, item.reorder_level])
        return buffer.getvalue()


def load_inventory(text: str) -> Inventory:
    inventory = Inventory()
    for row in csv.DictReader(io.StringIO(text)):
        inventory.add(
            Item(
                sku=row["sku"],
                name=row["name"],
                quantity=int(row["quantity"]),
                reorder_level=int(row["reorder_level"]),
            )
        )
    return inventory
