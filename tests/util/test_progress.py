"""Progress output: one redrawn line in a terminal, a few clean lines in a log."""

from __future__ import annotations

import io
import re

from pinsage.util.progress import Progress, track


def test_a_log_gets_at_most_one_line_per_ten_percent_and_no_carriage_returns():
    buf = io.StringIO()  # not a TTY, like an Airflow task log
    assert list(track(range(2650), 2650, "train epoch 3/10", "batches", stream=buf)) == list(range(2650))
    lines = buf.getvalue().splitlines()
    assert "\r" not in buf.getvalue() and len(lines) == 10
    assert re.fullmatch(r"train epoch 3/10:  10% \(265/2650 batches\) \d+\.\ds", lines[0])
    assert lines[-1].startswith("train epoch 3/10: 100% (2650/2650 batches)")


def test_a_stage_that_stops_early_says_where_and_a_big_step_is_one_line():
    buf = io.StringIO()
    with Progress("export", 10, "chunks", stream=buf) as bar:
        bar.update(7)  # jumps over 10%..70%: one line
        bar.update(1)
    assert buf.getvalue().splitlines()[0].startswith("export:  70% (7/10 chunks)")
    assert len(buf.getvalue().splitlines()) == 2  # 80%; closing at 80% repeats nothing
    buf = io.StringIO()
    with Progress("export", 100, "chunks", stream=buf) as bar:
        bar.update(15)
        bar.update(4)  # 19%: below the next step; the close reports it
    assert [line.split(" (")[0] for line in buf.getvalue().splitlines()] == ["export:  15%", "export:  19%"]


def test_a_terminal_gets_one_line_redrawn_in_place():
    buf = io.StringIO()
    with Progress("neighbors: walks", 5, "items", stream=buf, tty=True) as bar:
        for _ in range(5):
            bar.update()
    text = buf.getvalue()
    assert text.count("\n") == 1 and text.endswith("s\n") and "\rneighbors: walks [" in text
    assert "100% (5/5 items)" in text


def test_it_can_be_silenced(monkeypatch):
    monkeypatch.setenv("PINSAGE_PROGRESS", "0")
    buf = io.StringIO()
    list(track(range(100), 100, "x", stream=buf))
    assert buf.getvalue() == ""
