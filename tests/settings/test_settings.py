"""Settings: environment over config file over defaults; bad values stop start-up by name."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from facegrid.indexer.settings import IndexerSettings
from facegrid.operator.local.settings import ControlPlaneSettings
from facegrid.settings import ConfigError
from facegrid.stack import StackSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FACEGRID_"):
            monkeypatch.delenv(name)


def test_environment_overrides_file_which_overrides_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "facegrid.toml"
    config.write_text('[indexer]\ndata_dir = "/from/file"\nhnsw_m = 28\nshard_name = "file"\n')
    monkeypatch.setenv("FACEGRID_INDEXER_SHARD_NAME", "env")
    settings = IndexerSettings.load(config)
    assert settings.data_dir == Path("/from/file")
    assert settings.hnsw_m == 28
    assert settings.shard_name == "env"
    assert settings.hnsw_ef_search == IndexerSettings.model_fields["hnsw_ef_search"].default


def test_config_file_via_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "facegrid.toml"
    config.write_text("[stack]\nport_base = 9100\nshards = 2\n")
    monkeypatch.setenv("FACEGRID_CONFIG", str(config))
    settings = StackSettings.load()
    assert (settings.port_base, settings.shards) == (9100, 2)


@pytest.mark.parametrize(
    ("env", "text", "named"),
    [
        ({"FACEGRID_INDEXER_HNSW_M": "lots"}, "", "FACEGRID_INDEXER_HNSW_M"),
        ({"FACEGRID_INDEXER_LISTEN": "nowhere"}, "", "FACEGRID_INDEXER_LISTEN"),
        ({"FACEGRID_INDEXER_LISTEN": "host:99999"}, "", "FACEGRID_INDEXER_LISTEN"),
        ({}, "", "FACEGRID_INDEXER_DATA_DIR"),
        ({}, '[indexer]\ndata_dir = "/d"\nhnsw_mm = 3\n', "'hnsw_mm' in [indexer]"),
        ({}, '[indexer]\ndata_dir = "/d"\nfsync = "sometimes"\n', "'fsync' in [indexer]"),
        ({}, "[indexr]\n", "unknown section(s) indexr"),
        ({}, "[indexer\n", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_culprit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], text: str, named: str
) -> None:
    if "DATA_DIR" not in named and not text:
        monkeypatch.setenv("FACEGRID_INDEXER_DATA_DIR", str(tmp_path))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = None
    if text:
        config = tmp_path / "facegrid.toml"
        config.write_text(text)
    with pytest.raises(ConfigError) as raised:
        IndexerSettings.load(config)
    assert named in str(raised.value)


def test_shard_list_is_parsed_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACEGRID_CONTROLPLANE_SHARDS", "a=127.0.0.1:1, b=127.0.0.1:2")
    assert ControlPlaneSettings.load().shards == ["a=127.0.0.1:1", "b=127.0.0.1:2"]
    monkeypatch.setenv("FACEGRID_CONTROLPLANE_SHARDS", "a=127.0.0.1:1,a=127.0.0.1:2")
    with pytest.raises(ConfigError, match=r"FACEGRID_CONTROLPLANE_SHARDS.*unique"):
        ControlPlaneSettings.load()


SERVICES = [
    ("facegrid.gateway", "FACEGRID_GATEWAY_LISTEN", "nope"),
    ("facegrid.extractor", "FACEGRID_EXTRACTOR_MAX_BATCH", "0"),
    ("facegrid.indexer", "FACEGRID_INDEXER_HNSW_EF_SEARCH", "-1"),
    ("facegrid.licensing", "FACEGRID_LICENSING_HEARTBEAT_INTERVAL", "soon"),
    ("facegrid.operator.local", "FACEGRID_CONTROLPLANE_SHARDS", "nonsense"),
    ("facegrid.video", "FACEGRID_VIDEO_RELOAD_TIMEOUT", "0"),
    ("facegrid.operator", "FACEGRID_OPERATOR_LISTEN", "x"),
]


def _run(
    module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACEGRID_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        env={**clean, "FACEGRID_INDEXER_DATA_DIR": "/tmp/unused", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(("module", "variable", "value"), SERVICES)
def test_service_with_bad_setting_exits_non_zero_naming_it(
    module: str, variable: str, value: str
) -> None:
    result = _run(module, env={variable: value})
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("module", [m for m, _, _ in SERVICES] + ["facegrid"])
def test_every_service_has_help(module: str) -> None:
    result = _run(module, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_check_config_prints_effective_settings() -> None:
    result = _run("facegrid.indexer", "--check-config", env={"FACEGRID_INDEXER_HNSW_M": "32"})
    assert result.returncode == 0, result.stderr
    assert "FACEGRID_INDEXER_HNSW_M=32" in result.stdout
    assert "configuration OK" in result.stdout


def test_a_service_on_a_taken_port_exits_with_the_reason() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(
            "facegrid.licensing",
            env={
                "FACEGRID_LICENSING_LISTEN": f"127.0.0.1:{port}",
                "FACEGRID_LICENSING_METRICS_LISTEN": "",
            },
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_followers_primary_can_follow_its_pod_ordinal(tmp_path: Path) -> None:
    """A follower StatefulSet's pod i follows primary pod i: `{ordinal}` in `primary`."""
    settings = IndexerSettings(
        data_dir=tmp_path,
        role="follower",
        shard_name="fg-indexer-r1-3",
        primary="fg-indexer-{ordinal}.fg-indexer:33001",
    )
    assert settings.primary == "fg-indexer-3.fg-indexer:33001"
    with pytest.raises(ValueError, match="does not end"):
        IndexerSettings(
            data_dir=tmp_path, role="follower", shard_name="replica", primary="p-{ordinal}:1"
        )
