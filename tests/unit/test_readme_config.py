"""The README's Configuration section against the config schema: every key its YAML block and its prose name
exists, the block lists every key with the code's default, and the docs name no key the code lacks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic_core import to_jsonable_python

from f2f.config import REQUIRED, describe

REPO = Path(__file__).resolve().parents[2]
DOCS = {path: path.read_text(encoding="utf-8") for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
KEYS = {doc.key: doc for doc in describe()}
SECTIONS = {key for key in KEYS if "." not in key}
_FILE = re.compile(r"\.(mp4|py|png|jpg|json|jsonl|yaml|md|html|csv|svg|txt)$")


def _config_section() -> str:
    readme = DOCS[REPO / "README.md"]
    start = readme.index("\n## Configuration\n")
    return readme[start : readme.index("\n## ", start + 1)]


def _keys_of(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value; the keys of a list's entries as `describe` names them (generator.lora[].path)."""
    found = {}
    for name, value in data.items():
        key = prefix + name
        found[key] = value
        if isinstance(value, dict) and value:
            found.update(_keys_of(value, key + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for entry in value:
                found.update(_keys_of(entry, key + "[]."))
    return found


def _readme_block() -> dict[str, Any]:
    blocks = re.findall(r"```yaml\n(.*?)```", _config_section(), re.S)
    assert len(blocks) == 1, "the Configuration section has one YAML block: the whole tree"
    return _keys_of(yaml.safe_load(blocks[0]))


def test_every_key_of_the_readme_block_exists():
    unknown = sorted(set(_readme_block()) - set(KEYS))
    assert not unknown, f"README.md's config block names keys the code lacks: {unknown}"


def test_the_readme_block_lists_every_key_with_the_codes_default():
    named = _readme_block()
    missing = sorted(k for k, doc in KEYS.items() if k not in named and "[]." not in k)
    assert not missing, f"README.md's config block lacks {missing} (`f2f config explain KEY` describes each)"
    for key, value in named.items():
        doc = KEYS.get(key)
        if doc is None or doc.kind == "section" or doc.default == REQUIRED:
            continue
        default = to_jsonable_python(doc.default)
        if key == "cache_dir":  # the README writes the home folder as ~
            value = str(Path(value).expanduser())
        assert value == default, f"README.md says {key}: {value!r}; the code's default is {default!r}"


def test_every_key_the_docs_name_exists():
    """`section.key` in backticks, in README.md and docs/*.md (file names such as `video.mp4` aside)."""
    named = set()
    for path, text in DOCS.items():
        for key in re.findall(r"`([a-z_]+(?:\.[a-z0-9_\[\]]+)+)", text):
            if key.split(".")[0] in SECTIONS and not _FILE.search(key):
                named.add((path.name, re.sub(r"\[\w*\]", "[]", key)))
    unknown = sorted((name, key) for name, key in named if key not in KEYS)
    assert not unknown, f"the docs name config keys the code lacks: {unknown}"
    assert ("README.md", "generator.family") in named  # the scan finds the Configuration section's own mentions
