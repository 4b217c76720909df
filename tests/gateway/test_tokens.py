"""Tokens: only their digests are stored; a stored token authenticates, anything else is 401."""

from __future__ import annotations

from typing import Any

import httpx
from pymongo import MongoClient

from facegrid.gateway.adapters import create_token, kept_token
from facegrid.gateway.core.tokens import token_digest


def test_the_database_never_holds_a_token(mongo_server: str, mongo_db: str) -> None:
    long = create_token(mongo_server, mongo_db, note="a")
    short = create_token(mongo_server, mongo_db, short=True, note="b")
    assert len(long) >= 32 and len(short) == 9 and short[4] == "-"
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server)
    with client:
        stored = list(client[mongo_db].tokens.find())
    assert {d["_id"] for d in stored} == {token_digest(long), token_digest(short)}
    assert not any(long in str(d) or short in str(d) for d in stored)


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
