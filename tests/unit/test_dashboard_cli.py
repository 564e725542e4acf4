"""`dawdle dashboard` without the database: the extra missing, loopback addresses, the chart."""

from __future__ import annotations

import sys

import pytest

from dawdle._cli import main
from dawdle._cli_dashboard import is_loopback
from dawdle._dashboard import chart


def test_without_the_extra_the_command_names_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for module in ("hypercorn", "hypercorn.config"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(SystemExit) as exited:
        main(["dashboard"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("pip install 'dawdle[dashboard]'")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 (checked, never bound)
        ("::", False),
        ("192.168.1.10", False),
        ("dashboard.internal", False),
    ],
)
def test_only_loopback_addresses_go_without_a_token(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_the_chart_stacks_failures_on_successes_with_the_peak_on_its_axis() -> None:
    counts = [(0, 0)] * 58 + [(3, 1), (8, 2)]
    svg = str(chart.svg(counts))
    assert svg.count('class="ok"') == 60
    assert svg.count('class="failed"') == 2
    assert ">10 per minute<" in svg
    assert 'aria-label="runs ended in the last hour: 14"' in svg
    assert "<title>this minute: 8 succeeded, 2 failed</title>" in svg
    assert "<title>1 min ago: 3 succeeded, 1 failed</title>" in svg
