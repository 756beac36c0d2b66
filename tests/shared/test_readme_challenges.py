"""README's table of supported challenges says what the registry says (names, label numbering, regions)."""

from __future__ import annotations

import re

from shared import challenges
from tests.helpers import ROOT


def _table_rows() -> dict[str, list[str]]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Supported challenges")
    rows = {}
    for line in readme[start:].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        found = re.match(r"`(\w+)`", cells[0]) if line.startswith("| `") else None
        if found:
            rows[found.group(1)] = cells
        elif rows and not line.startswith("|"):
            break
    return rows


def test_every_registry_entry_has_a_row_and_nothing_else_does():
    assert set(_table_rows()) == set(challenges.CHALLENGES)


def test_each_row_gives_the_registrys_labels_and_regions():
    for name, cells in _table_rows().items():
        entry = challenges.get(name)
        labels = ", ".join(f"{label.value} {label.key}" for label in entry.labels)
        assert cells[2] == f"{labels} ({entry.num_classes})", name
        assert cells[3] == ", ".join(entry.regions), name
