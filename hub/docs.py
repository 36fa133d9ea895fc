"""Write (or check) every file generated from code: docs/events and deploy/clickhouse."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from shared.events.docs import generated_files
from shared.generated import sync_files


def write_generated(root: Path, check: bool = False) -> list[str]:
    stale = sync_files(root / "docs" / "events", generated_files(), check)
    # The ClickHouse DDL belongs to insights: run its generator rather than import a service here.
    args = [sys.executable, "-m", "services.insights.schema"] + (["--check"] if check else [])
    result = subprocess.run(args, cwd=root, capture_output=True, text=True)
    stale += [line for line in result.stdout.splitlines() if line.strip()]
    return stale
