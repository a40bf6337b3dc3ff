"""The dependency floors of pyproject.toml, for CI's floors step (.ci/run).

  python scripts/floors.py pins            one `name==floor` line per dependency (a pip
                                            requirements file that installs the floors exactly)
  python scripts/floors.py kept REPORT PKG...  exit 1 if pip's --dry-run --report REPORT would
                                            install (replace) any PKG, e.g. torch transformers

The floors are the oldest versions the test suite passes with; CI installs exactly these and runs
the suite, so a floor that stops working fails CI instead of a user's install.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
_FLOOR = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?>=([^,;\s]+)$")


def pins() -> list[str]:
    """`name==floor` for every core dependency (each must be written `name>=floor`)."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    lines = []
    for requirement in project["dependencies"]:
        match = _FLOOR.match(requirement.replace(" ", ""))
        if match is None:
            raise SystemExit(f"{requirement!r} in pyproject.toml is not written name>=floor")
        lines.append(f"{match.group(1)}=={match.group(3)}")
    return lines


def replaced(report: Path, names: list[str]) -> list[str]:
    """The `names` that pip's install report would install, as 'name version'."""
    wanted = {_normal(name) for name in names}
    installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    return [
        f"{item['metadata']['name']} {item['metadata']['version']}"
        for item in installs
        if _normal(item["metadata"]["name"]) in wanted
    ]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str]) -> int:
    if argv[:1] == ["pins"]:
        print("\n".join(pins()))
        return 0
    if argv[:1] == ["kept"] and len(argv) >= 3:
        changed = replaced(Path(argv[1]), argv[2:])
        for item in changed:
            print(f"installing moectl would replace the environment's {item}", file=sys.stderr)
        return 1 if changed else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
