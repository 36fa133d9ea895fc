"""Files generated from code (schemas, DDL): write them, or list the stale ones."""
from __future__ import annotations

from pathlib import Path


def sync_files(target: Path, files: dict[str, str], check: bool) -> list[str]:
    stale = []
    for name, content in files.items():
        path = target / name
        if not path.exists() or path.read_text() != content:
            stale.append(str(path))
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
    return stale
