"""The error tree: every class is a FoglineError, has an HTTP status, and ends the CLI with 2."""

from __future__ import annotations

import inspect

import pytest

import fogline.errors as errors
from fogline.errors import (
    ConfigError,
    Conflict,
    FoglineError,
    Refused,
    TimedOut,
    TransportError,
    Unauthorized,
    Unreachable,
    http_status,
)

CLASSES = [
    value
    for name in errors.__all__
    if inspect.isclass(value := getattr(errors, name)) and issubclass(value, BaseException)
]


@pytest.mark.parametrize("kind", CLASSES, ids=lambda kind: kind.__name__)
def test_every_error_is_a_fogline_error_with_an_http_status(kind: type[FoglineError]) -> None:
    error = kind("what went wrong")

    assert isinstance(error, FoglineError)
    assert 400 <= http_status(error) <= 599


def test_the_most_specific_status_wins() -> None:
    assert http_status(Conflict("deployment d-1 is still running")) == 409
    assert http_status(ConfigError("bad value")) == 400
    assert http_status(Unauthorized("missing token")) == 401
    assert http_status(ValueError("not ours")) == 500


def test_a_conflict_is_still_a_config_error() -> None:
    with pytest.raises(ConfigError, match="still running"):
        raise Conflict("deployment d-1 is still running")


@pytest.mark.parametrize("kind", [Unreachable, Refused, TimedOut], ids=lambda k: k.__name__)
def test_transport_failures_are_transport_errors(kind: type[TransportError]) -> None:
    assert issubclass(kind, TransportError)
    assert http_status(kind("broker")) == 500  # the server's trouble, not the request's


@pytest.mark.parametrize("kind", [Unreachable, Refused, TimedOut, Conflict, Unauthorized])
def test_the_cli_prints_one_line_and_exits_2(
    kind: type[FoglineError], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fogline.cli as cli

    def fails(**_: object) -> None:
        raise kind("the broker said no")

    monkeypatch.setattr(cli, "app", fails)

    status = cli.main([])

    assert status == 2
    assert capsys.readouterr().err.strip() == "error: the broker said no"
