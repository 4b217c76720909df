"""Tokens: only their digests are stored; a stored token authenticates, anything else is 401."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient, MongoClient

from facegrid import cli
from facegrid.gateway.adapters import MongoTokenStore, create_token, kept_token
from facegrid.gateway.core.tokens import new_token, token_digest


def test_the_database_never_holds_a_token(mongo_server: str, mongo_db: str) -> None:
    long = create_token(mongo_server, mongo_db, note="a")
    short = create_token(mongo_server, mongo_db, short=True, note="b")
    assert len(long) >= 32 and len(short) == 9 and short[4] == "-"
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server)
    with client:
        stored = list(client[mongo_db].tokens.find())
    assert {d["_id"] for d in stored} == {token_digest(long), token_digest(short)}
    assert not any(long in str(d) or short in str(d) for d in stored)


def test_facegrid_token_finds_the_gateways_mongodb(
    mongo_server: str,
    mongo_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As the seed's `findface-facenapi.token --config=/etc/findface-facenapi.ini`: with no
    stack running here, the gateway's settings say where MongoDB is."""
    for name in ("FACEGRID_MONGO_URI", "FACEGRID_GATEWAY_MONGO_URI", "FACEGRID_CONFIG"):
        monkeypatch.delenv(name, raising=False)

    def token(*argv: str) -> int:
        with pytest.raises(SystemExit) as exited:
            cli.main(list(argv))
        return int(exited.value.code or 0)

    data = ["--data-dir", str(tmp_path / "no-stack")]
    assert token("token", *data) == 1
    assert "FACEGRID_GATEWAY_MONGO_URI" in capsys.readouterr().err

    config = tmp_path / "facegrid.toml"
    config.write_text(f'[gateway]\nmongo_uri = "{mongo_server}"\nmongo_db = "{mongo_db}"\n')
    assert token("--config", str(config), "token", *data, "--note", "from config") == 0
    from_config = capsys.readouterr().out.strip()
    monkeypatch.setenv("FACEGRID_GATEWAY_MONGO_URI", mongo_server)
    assert token("token", *data, "--mongo-db", mongo_db, "--short") == 0
    from_env = capsys.readouterr().out.strip()
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server)
    with client:
        stored = {d["_id"] for d in client[mongo_db].tokens.find()}
    assert {token_digest(from_config), token_digest(from_env)} <= stored


def test_a_kept_token_is_reused_while_valid(mongo_server: str, mongo_db: str) -> None:
    first = kept_token(mongo_server, mongo_db, None, "up")
    assert kept_token(mongo_server, mongo_db, first, "up") == first
    assert kept_token(mongo_server, mongo_db, "forged-token", "up") != "forged-token"


async def test_tokens_authenticate(
    api: httpx.AsyncClient, mongo_server: str, mongo_db: str
) -> None:
    short = create_token(mongo_server, mongo_db, short=True)
    ok = await api.get("/v0/galleries", headers={"Authorization": f"Token {short}"})
    assert ok.status_code == 200
    for header in (f"Token {short}x", f"Bearer {short}", "Token", ""):
        refused = await api.get("/v0/galleries", headers={"Authorization": header})
        assert refused.status_code == 401
        assert refused.json()["code"] == "AUTH_FAILED"


async def test_a_valid_token_is_remembered_for_a_while(mongo_server: str, mongo_db: str) -> None:
    """Requests with a known token do not each wait on MongoDB; a removed token stops working
    once the memory of it runs out, and an unknown token is looked up every time."""
    now = [1000.0]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server)
    store = MongoTokenStore(client, mongo_db, remember=10.0, clock=lambda: now[0])
    token = create_token(mongo_server, mongo_db)
    later = "not-yet-" + token
    try:
        assert not await store.exists(later)
        assert await store.exists(token)
        await client[mongo_db].tokens.delete_one({"_id": token_digest(token)})
        now[0] += 9.0
        assert await store.exists(token)  # remembered
        now[0] += 2.0
        assert not await store.exists(token)  # looked up again: gone
        await client[mongo_db].tokens.insert_one({"_id": token_digest(later)})
        assert await store.exists(later)  # a refusal is not remembered
    finally:
        await client.close()


def test_tokens_never_start_like_a_command_line_flag() -> None:
    """`facegrid-video --api-token <token>`: a token starting with `-` would read as a flag
    (once in 64 tokens, before this was ruled out; found by a failing CI run)."""
    assert not any(new_token().startswith("-") for _ in range(2000))
