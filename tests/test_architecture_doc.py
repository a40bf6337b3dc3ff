"""docs/architecture.md names every module of moectl with its job, and names none that is gone."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "moectl"
# Packages of one module per family or balancing scheme, each registering itself: such a module is
# named by its folder's bullet (its job is its family or scheme, and the registry tests check it
# is selectable), so a new family or scheme edits no list, this page included.
SELF_REGISTERING = {Path("model/arch"), Path("interop/families"), Path("model/balance")}


def bullets() -> dict[str, str]:
    """The 'Modules, one job each' section's bullets by the package each opens with (`data/`;
    `__init__.py` for the top-level modules; interop's two floors joined)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Modules, one job each", 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = defaultdict(str)
    for bullet in re.split(r"\n- ", section)[1:]:
        found[re.match(r"`([^`/]+)", bullet).group(1)] += bullet
    return found


def test_every_module_is_named_in_its_packages_bullet() -> None:
    found = bullets()
    missing = []
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE)
        if "hf_code" in relative.parts[:-1] and module.name != "__init__.py":
            continue  # the exported code, named as its folder
        if relative.parent in SELF_REGISTERING and module.name not in ("__init__.py", "base.py"):
            relative = relative.parent / "__init__.py"  # a registering module: named as its folder
            module = PACKAGE / relative
        top = relative.parts[0] if len(relative.parts) > 1 else "__init__.py"
        name = f"{relative.parent.name}/" if module.name == "__init__.py" else module.name
        if relative == Path("__init__.py") or (len(relative.parts) == 2 and name.endswith("/")):
            name = "__init__.py" if top == "__init__.py" else f"{top}/"
        bullet = found[top] or found["__init__.py"]  # a package without a bullet of its own
        if f"`{name}`" not in bullet and f"`{name.rstrip('/')}" not in bullet:
            missing.append(str(relative))
    assert not missing, f"docs/architecture.md does not name: {missing}"


def test_no_named_module_is_gone() -> None:
    names = {p.name for p in PACKAGE.rglob("*.py")}
    named = {n for b in bullets().values() for n in re.findall(r"`([a-z_0-9]+\.py)`", b)}
    assert named <= names, f"named but gone: {sorted(named - names)}"
