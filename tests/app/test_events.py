"""The app's event wiring, read from the built Blocks (no server needed)."""

from __future__ import annotations

import gradio as gr
import pytest

FILE_INPUTS = (gr.File, gr.Image, gr.Gallery, gr.UploadButton)


@pytest.fixture(scope="module")
def events(services):
    from app.ui import build_demo

    return list(build_demo(services).fns.values())


def test_no_event_that_takes_a_file_runs_outside_the_queue(events):
    """An unqueued event passes the queue's size and concurrency limits; one that accepts an
    upload would let 20 callers decode and search at once (the probe's fn_index 4)."""
    unqueued = [e for e in events if not e.queue]
    assert unqueued, "the cheap UI-only events are expected to skip the queue"
    for event in unqueued:
        assert not any(isinstance(b, FILE_INPUTS) for b in event.inputs), event.name


def test_both_ways_to_search_share_one_concurrency_group(events):
    searches = [e for e in events if e.name == "search"]
    assert len(searches) == 2  # the button/upload and the example click
    assert {(e.queue, e.concurrency_id, e.concurrency_limit) for e in searches} == {
        (True, "search", 4)
    }
