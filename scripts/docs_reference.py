"""mkdocs hook: adds the reference pages generated from the code to the site.

``reference/configuration.md``, ``reference/metrics.md`` and
``reference/logs.md`` are not files in ``docs/``; they are rendered by
:mod:`service.reference` on every build, so they always match the code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

# Document the checked-out code, even if another copy of the package is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.reference import pages


def on_files(files: Files, config: Any, **_kwargs: Any) -> Files:
    for path, content in pages().items():
        files.append(File.generated(config, path, content=content))
    return files
