"""The app's event wiring, read from the built Blocks (no server needed)."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest

FILE_INPUTS = (gr.File, gr.Image, gr.Gallery, gr.UploadButton)


@pytest.fixture(scope="module")
def events(services):
    from app.ui import build_demo

    return list(build_demo(services).fns.values())


def test_the_only_unqueued_events_that_take_a_file_are_the_searches(events):
    """An unqueued event passes the queue's size and concurrency limits (the probe's
    fn_index 4: 20 callers decoding at once). The searches skip the queue on purpose, for
    one round trip, and bound themselves (the next test); nothing else that takes a file
    may."""
    unqueued = [e for e in events if not e.queue]
    assert unqueued, "the cheap UI-only events are expected to skip the queue"
    for event in unqueued:
        if any(isinstance(b, FILE_INPUTS) for b in event.inputs):
            assert event.name == "search", event.name


def test_both_ways_to_search_run_one_handler_outside_the_queue(events):
    searches = [e for e in events if e.name == "search"]
    assert len(searches) == 2  # the button/upload and the example click
    assert {e.queue for e in searches} == {False}
    assert len({e.fn for e in searches}) == 1


def test_twenty_ui_searches_at_once_run_at_most_four_at_a_time(
    events, services, png_bytes, tmp_path
):
    """The UI's search handler, called 20 times at once as 20 unqueued requests would:
    every one answers, and never more than the server's search slots decode and search at
    the same time."""
    import asyncio

    from app.services.search import SEARCH_CONCURRENCY

    search = next(e for e in events if e.name == "search").fn
    query = tmp_path / "query.png"
    query.write_bytes(png_bytes(np.random.default_rng(0).integers(0, 255, (28, 28), np.uint8)))

    async def burst():
        return await asyncio.gather(
            *(search(str(query), None, ["eat"], 3, None) for _ in range(20))
        )

    services.search.most_running = 0
    answers = asyncio.run(burst())
    assert len(answers) == 20 and all(len(a[-1]["eat"]["hits"]) == 3 for a in answers)
    assert services.search.running == 0
    assert services.search.most_running == SEARCH_CONCURRENCY == 4


def test_an_unqueued_search_error_is_kept_for_its_session_and_shown_once():
    """The queued follow-up raises the error its session's search noted (the page's
    toast), once; other sessions see nothing; the notes never grow past their limit."""
    from types import SimpleNamespace

    from app.ui.common import ErrorNotes

    notes = ErrorNotes(limit=3)
    tab = SimpleNamespace(session_hash="tab-1")
    notes.keep(tab, gr.Error("holiday.jpg: not an image file"))
    notes.show(SimpleNamespace(session_hash="tab-2"))  # another tab: nothing to show
    with pytest.raises(gr.Error, match="holiday.jpg: not an image file"):
        notes.show(tab)
    notes.show(tab)  # shown once
    notes.keep(None, gr.Error("no session"))  # a program's call has none to show it to
    for i in range(10):
        notes.keep(SimpleNamespace(session_hash=f"s{i}"), gr.Error(str(i)))
    assert len(notes) == 3
    with pytest.raises(gr.Error, match="9"):
        notes.show(SimpleNamespace(session_hash="s9"))
