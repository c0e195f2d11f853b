"""Every TOML example in README.md and docs/*.md loads and validates.

Each block is merged onto a minimal base configuration (a whole example
overrides every base key; a fragment is completed by it) and validated. Policies
are compiled too (AccessControl), so a rule that would not compile fails here.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from angos.auth import AccessControl
from angos.config import build_config, merge

ROOT = Path(__file__).resolve().parent.parent
BASE = {"server": {"bind_address": "127.0.0.1"}, "blob_store": {"fs": {"root_dir": "/tmp/angos-docs"}}}


def _blocks():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for i, m in enumerate(re.finditer(r"```toml\n(.*?)```", text, re.S)):
            line = text[:m.start()].count("\n") + 1
            yield pytest.param(m.group(1), id=f"{path.name}:{line}")


@pytest.mark.parametrize("block", list(_blocks()))
def test_documented_config_example_is_valid(block):
    doc = tomllib.loads(block)
    # An example with its own blob store replaces the base one (two stores would be invalid).
    base = {k: v for k, v in BASE.items() if not (k == "blob_store" and "blob_store" in doc)}
    cfg = build_config(merge(base, doc))  # a whole config overrides the base; a fragment completes it
    AccessControl(cfg)


def test_docs_have_examples():
    assert len(list(_blocks())) >= 8
