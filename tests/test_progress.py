import json

import pytest

from urbangeo import progress as P


@pytest.fixture(autouse=True)
def _restore_mode():
    yield
    P.set_mode("bar")


def test_json_mode_reports_every_step_end(capsys):
    P.set_mode("json")
    with P.progress(3, task="demo", unit="step") as bar:
        for _ in range(3):
            bar.update(1, status="x")
    P.message("done", level="info")
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0] == {"event": "progress", "task": "demo", "done": 0, "total": 3}
    assert events[-2]["done"] == 3
    assert events[-1] == {"event": "message", "level": "info", "text": "done"}


def test_none_mode_is_silent_but_for_warnings(capsys):
    P.set_mode("none")
    with P.progress(2, task="demo") as bar:
        bar.update(2)
    P.message("hello")
    P.message("careful", level="warning")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "warning: careful\n"


def test_bar_mode_draws_on_stderr(capsys):
    P.set_mode("bar")
    with P.progress(2, task="demo") as bar:
        bar.update(2)
    captured = capsys.readouterr()
    assert captured.out == "" and "demo" in captured.err


def test_unknown_mode():
    with pytest.raises(ValueError, match="progress mode"):
        P.set_mode("loud")
