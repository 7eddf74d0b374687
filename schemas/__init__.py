"""The Avro schemas of the project's topics, shipped as package data.

`<name>.avsc` is the current schema; `history/<name>/v<N>.avsc` are the released versions,
which the current schema must stay able to read (tests/schemas/test_compatibility.py).
"""

from __future__ import annotations

import json
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

_ROOT: Traversable = files(__name__)


def schema_names() -> list[str]:
    """Names of the current schemas (file names without .avsc), sorted."""
    return sorted(
        entry.name.removesuffix(".avsc")
        for entry in _ROOT.iterdir()
        if entry.is_file() and entry.name.endswith(".avsc")
    )


def load_schema(name: str) -> dict[str, Any]:
    """The current schema `name` as a fresh JSON dict (callers may mutate it)."""
    resource = _ROOT.joinpath(f"{name}.avsc")
    if not resource.is_file():
        raise KeyError(f"no schema {name!r}; known: {', '.join(schema_names())}")
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


def history_versions(name: str) -> list[tuple[int, dict[str, Any]]]:
    """The released versions of schema `name` as (version, schema), oldest first."""
    folder = _ROOT.joinpath("history", name)
    if not folder.is_dir():
        return []
    versions = [
        (int(entry.name[1:].removesuffix(".avsc")), json.loads(entry.read_text(encoding="utf-8")))
        for entry in folder.iterdir()
        if entry.name.startswith("v") and entry.name.endswith(".avsc")
    ]
    return sorted(versions, key=lambda version: version[0])
