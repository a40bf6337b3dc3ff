"""`moectl presets`: the shipped presets, each with its description."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from moectl.cli.common import console
from moectl.cli.schemas import JsonOption, PresetEntry, PresetsOutput, print_json


def presets(as_json: JsonOption = False) -> None:
    """List the presets `moectl train --preset NAME` accepts, with what each one is for.

    Examples:

      moectl presets

      moectl presets --json

      moectl train --preset cpu-moe --print-config
    """
    from moectl.config import preset_description, preset_names

    if as_json:
        entries = [PresetEntry(name=n, description=preset_description(n)) for n in preset_names()]
        print_json(PresetsOutput(presets=entries))
        return
    table = Table(title="Presets", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("description")
    for name in preset_names():
        table.add_row(Text(name), Text(preset_description(name)))
    console.print(table)
