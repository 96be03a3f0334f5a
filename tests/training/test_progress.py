"""Progress bars: live on a terminal, a few whole lines in a log."""

import io

from training.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_without_a_terminal_a_long_loop_writes_whole_lines_only():
    log = io.StringIO()
    for _ in progress_bar(range(200), desc="rendering", unit="img", file=log):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 3, lines  # the start and the end, not one line per image
    assert "200/200" in lines[-1]


def test_on_a_terminal_the_bar_redraws_in_place():
    tty = Terminal()
    for _ in progress_bar(range(50), desc="rendering", file=tty, mininterval=0):
        pass
    assert tty.getvalue().count("\r") > 10


def test_disabled_writes_nothing():
    log = io.StringIO()
    for _ in progress_bar(range(10), file=log, disable=True):
        pass
    assert log.getvalue() == ""
