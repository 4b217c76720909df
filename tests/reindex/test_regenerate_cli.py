"""`facegrid regenerate`'s arguments: the seed's findface-regenerate flag names are accepted
beside FaceGrid's (parsing only; no server is started)."""

from __future__ import annotations

import argparse

import pytest

from facegrid.gateway.reindex import cli
from facegrid.gateway.reindex.regenerate import RegenerateOptions


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="facegrid")
    cli.add_commands(top.add_subparsers(dest="command", required=True))
    return top


def options(*argv: str) -> RegenerateOptions:
    return cli.regenerate_options(parser().parse_args(["regenerate", *argv]))


def test_the_seeds_names_mean_facegrids() -> None:
    seed = options(
        "--min-id=5", "--max-id=90", "--every-other=3", "--every-other-offset=2", "--coroutines=9"
    )
    facegrid = options(
        "--first-id=5", "--last-id=90", "--every-other=3", "--offset=2", "--parallel=9"
    )
    assert seed == facegrid
    assert (seed.first_id, seed.last_id, seed.every, seed.offset, seed.parallel) == (
        5,
        90,
        3,
        2,
        9,
    )
    assert not seed.redetect


def test_defaults_are_the_seeds() -> None:
    o = options()
    assert (o.first_id, o.last_id, o.every, o.offset, o.redetect) == (1, None, 1, 0, False)


@pytest.mark.parametrize(
    ("value", "redetect"),
    [
        ("facens", False),
        ("normalized", True),
        ("thumbs", True),
        ("normalized,thumbs,facens", True),
        ("facens,,thumbs", True),
    ],
)
def test_regenerate_normalized_or_thumbs_means_redetect(value: str, redetect: bool) -> None:
    assert options(f"--regenerate={value}").redetect is redetect
    assert options("--regenerate", value).redetect is redetect


def test_redetect_stays_whatever_regenerate_says() -> None:
    assert options("--redetect", "--regenerate=facens").redetect


@pytest.mark.parametrize("value", ["facens,vectors", "", ","])
def test_an_unknown_part_is_a_usage_error(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["regenerate", f"--regenerate={value}"])
    assert exited.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "argument --regenerate" in err
    assert "choose from facens, thumbs, normalized" in err
    if value == "facens,vectors":
        assert "unknown vectors" in err


def test_facen_size_is_accepted_and_changes_nothing() -> None:
    args = parser().parse_args(["regenerate", "--facen-size=512"])
    assert args.facen_size == 512
    assert cli.regenerate_options(args) == options()


def test_help_shows_both_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["regenerate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for first, seed in (
        ("--first-id", "--min-id"),
        ("--last-id", "--max-id"),
        ("--offset", "--every-other-offset"),
        ("--parallel", "--coroutines"),
    ):
        assert f"{first} {first.lstrip('-').replace('-', '_').upper()}, {seed}" in text
    assert "--regenerate WHAT" in text
    assert "--facen-size N" in text


def test_migrate_keeps_its_own_names() -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["migrate", "run", "--coroutines=3"])
