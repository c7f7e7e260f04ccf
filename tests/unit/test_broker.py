"""The file-system broker (real Kombu connections on a temporary folder): messages appear whole, one reader takes each."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from f2f.serving.jobs.queue import FILE_SCHEME, JobsArgs, task_processor_config

# Kombu keeps its file-system transport's bindings in one state per process: each test its own queue name.


def _connection(store: Path) -> Any:
    adapter = task_processor_config(JobsArgs(), store).adapter_config
    return Connection(adapter.broker_url, transport_options=adapter.broker_transport_options)


def test_messages_go_through_the_f2f_transport_and_each_is_taken_once(tmp_path: Path) -> None:
    assert _connection(tmp_path).transport_cls == FILE_SCHEME
    with _connection(tmp_path) as producer, _connection(tmp_path) as one, _connection(tmp_path) as other:
        sent = producer.SimpleQueue("once")
        for n in range(4):
            sent.put({"job": n})
        taken = []
        for reader in (one, other, one, other):
            message = reader.SimpleQueue("once").get(timeout=2)
            taken.append(message.payload["job"])
            message.ack()
        assert sorted(taken) == [0, 1, 2, 3]
        with pytest.raises(one.SimpleQueue("once").Empty):
            one.SimpleQueue("once").get(timeout=0.3)
    assert not list((tmp_path / "broker" / "claimed").iterdir())  # read and removed


def test_a_message_still_being_written_is_not_taken(tmp_path: Path) -> None:
    """Kombu's own transport creates the file empty and fills it after; a reader in between read "" and died."""
    with _connection(tmp_path) as conn:
        queue = conn.SimpleQueue("partial")
        queue.put({"job": 1})
        (message,) = (tmp_path / "broker" / "messages").glob("*.msg")
        partial = message.with_name(message.name + ".part")
        message.rename(partial)  # as the writer leaves it until the rename
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.3)
        partial.rename(message)
        assert queue.get(timeout=2).payload == {"job": 1}


def test_an_unreadable_message_is_set_aside_and_the_next_one_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with _connection(tmp_path) as conn:
        queue = conn.SimpleQueue("broken")
        messages = tmp_path / "broker" / "messages"
        (messages / "0_bad.broken.msg").write_bytes(b"")  # sorts first: read first
        queue.put({"job": 2})
        with caplog.at_level(logging.WARNING, logger="f2f.serving"):
            assert queue.get(timeout=2).payload == {"job": 2}
        assert [p.name for p in (tmp_path / "broker" / "unreadable").iterdir()] == ["0_bad.broken.msg"]
        assert "0_bad.broken.msg" in caplog.text and "sent again" in caplog.text
