"""A start's wake-up (`start_note`) carries its run's workflow and queue, whatever their names, in
one word PostgreSQL can send (see `postgres._sent`), and is read back as it was written."""

from __future__ import annotations

import pytest

from cairn.store.base import WORK, Started, read_note, start_note
from cairn.store.postgres import _heard, _sent

ODD_NAMES = [
    "with spaces, \"quotes\", 'single', [brackets] and \\ backslashes",
    "ünïcødé ✉ 郵便 \U0001f4e8",
    "\U0001f4e8" * 255,  # the longest name a queue may have, each character escaped as 12
]


@pytest.mark.parametrize("name", [*ODD_NAMES, "", "a\x00b", "\udc80", "run:x", "[", "] work"])
def test_a_start_note_reads_back_in_this_process_and_another(name: str) -> None:
    for workflow, queue in ((name, "default"), ("tests.route.a", name)):
        note = start_note(workflow, queue)
        assert read_note(note) == (WORK, Started(workflow, queue))
        for origin in ("0123456789ab", "*"):
            sent = _sent(origin, note)
            assert len(sent.encode()) < 8000
            assert _heard(sent) == (origin, note)
            # A process of an earlier version takes what precedes the first space for the origin.
            assert sent.partition(" ")[2] == WORK


def test_a_start_note_too_long_for_a_notification_is_a_plain_wake_up() -> None:
    note = start_note("w" * 8000, "default")
    assert note == WORK and read_note(note) == (WORK, None)


@pytest.mark.parametrize("note", ["work", "run:a b", "schedules", "work nonsense", "work [1,2]", 'work ["a"]'])
def test_other_notes_read_back_as_they_are_or_wake_everyone(note: str) -> None:
    key, detail = read_note(note)
    assert detail is None and key == (WORK if note.startswith("work") else note)
    assert _heard(_sent("0123456789ab", note)) == ("0123456789ab", note)
