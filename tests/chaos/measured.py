"""What the fault scenarios measured, collected for the summary at the end of the run."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Measured:
    scenario: str
    measured: dict[str, Any] = field(default_factory=dict)


RESULTS: list[Measured] = []


def record(scenario: str, **measured: Any) -> Measured:
    """Keep one scenario's numbers for the run's summary (and CHAOS_RESULTS, if set)."""
    row = Measured(scenario, measured)
    RESULTS.append(row)
    target = os.environ.get("CHAOS_RESULTS")
    if target:
        with Path(target).open("a") as out:
            out.write(json.dumps(asdict(row)) + "\n")
    return row
