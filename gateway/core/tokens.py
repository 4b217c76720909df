"""API tokens: `Authorization: Token <key>` on every request, checked against the token store."""

from __future__ import annotations

import hashlib
import secrets
from typing import Protocol

from facegrid.gateway.core.errors import AuthFailed


class TokenStore(Protocol):
    async def exists(self, token: str) -> bool:
        """Whether the token is valid; stores keep only `token_digest`s, never tokens."""
        ...


def token_digest(token: str) -> str:
    """What is stored for a token: its SHA-256. Tokens are long random strings, so a plain
    hash suffices (no salt or stretching is needed against guessing)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(short: bool = False) -> str:
    """A long token like `0123456789_abcdefghijklmnopqrstuvw`, or a short one like `A0B1-C2D3`."""
    if short:
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
        raw = "".join(secrets.choice(alphabet) for _ in range(8))
        return f"{raw[:4]}-{raw[4:]}"
    while True:
        # Never one starting with `-`: on a command line (`--api-token -x...`) it reads as a flag.
        token = secrets.token_urlsafe(24)
        if not token.startswith("-"):
            return token


def parse_authorization(header: str | None) -> str:
    if not header:
        raise AuthFailed("no Authorization header; send 'Authorization: Token <key>'")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "token" or not token.strip():
        raise AuthFailed("the Authorization header must be 'Token <key>'")
    return token.strip()


async def authenticate(store: TokenStore, header: str | None) -> str:
    token = parse_authorization(header)
    if not await store.exists(token):
        raise AuthFailed("the token is not valid")
    return token
