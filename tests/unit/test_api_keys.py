"""API keys: the keys file, token checks, rotation, and the Authorization header; no Ray."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from f2f.errors import InvalidConfig
from f2f.serving.api.auth import ANONYMOUS, AuthArgs, KeyRing, Unauthenticated, add_key, caller_of, hash_token, read_keys


def test_a_new_key_is_stored_as_a_hash_only(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    token = add_key(path, "alice")
    text = path.read_text()
    assert token not in text and hash_token(token) in text
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert read_keys(path) == {"alice": hash_token(token)}


def test_tokens_are_long_and_unguessable(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    tokens = {add_key(path, f"k{i}") for i in range(20)}
    assert len(tokens) == 20 and all(len(t) >= 40 for t in tokens)


def test_the_ring_names_the_key_of_a_token(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    alice, bob = add_key(path, "alice"), add_key(path, "bob")
    ring = KeyRing(path)
    assert (ring.who(alice), ring.who(bob), ring.who("f2f_nope"), ring.who(alice[:-1])) == ("alice", "bob", None, None)


def test_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    alice = add_key(path, "alice")
    ring = KeyRing(path)
    carol = add_key(path, "carol")  # a rotated Secret
    assert ring.who(carol) == "carol" and ring.who(alice) == "alice"
    path.write_text(yaml.safe_dump({"keys": {"carol": hash_token(carol)}}))
    assert ring.who(alice) is None  # removed keys stop working without a restart


def test_a_broken_rewrite_keeps_the_last_good_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    alice = add_key(path, "alice")
    ring = KeyRing(path)
    path.write_text("keys: [not, a, mapping]\n")
    assert ring.who(alice) == "alice"


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("keys: {alice: plain-token}\n", "auth.keys_file.keys.alice"),
        ("keys: {'a b': 'sha256:" + "0" * 64 + "'}\n", "auth.keys_file.keys.a b"),
        ("- just a list\n", "auth.keys_file"),
        ("keys: [\n", "auth.keys_file"),
    ],
)
def test_a_bad_keys_file_is_named(tmp_path: Path, content: str, field: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(content)
    with pytest.raises(InvalidConfig) as info:
        read_keys(path)
    assert info.value.field == field and "plain-token" not in str(info.value)  # a stored value is never echoed


def test_a_key_name_is_added_once(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    add_key(path, "alice")
    with pytest.raises(InvalidConfig, match="already has this key"):
        add_key(path, "alice")
    with pytest.raises(InvalidConfig) as info:
        add_key(path, "../evil")
    assert info.value.field == "name"


def test_the_authorization_header(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    token = add_key(path, "alice")
    ring = KeyRing(path)
    assert caller_of(f"Bearer {token}", ring) == "alice" and caller_of(f"bearer  {token} ", ring) == "alice"
    for header in (None, "", "Bearer", "Bearer ", f"Basic {token}", "Bearer wrong"):
        with pytest.raises(Unauthenticated):
            caller_of(header, ring)
    assert caller_of(None, None) == ANONYMOUS  # auth off


def test_auth_on_needs_a_keys_file() -> None:
    from f2f.serving.app import parse_args

    with pytest.raises(InvalidConfig) as info:
        parse_args({"auth": {}})
    assert info.value.field == "args.auth.keys_file"
    assert AuthArgs(required=False).keys_file is None
