"""Licence files: a JSON payload signed with the vendor's Ed25519 key.

A licence file is JSON: `{"format": "facegrid-licence/1", "payload": <base64 of the payload's
JSON bytes>, "signature": <base64 Ed25519 signature of exactly those bytes>}`. Signing the bytes
as written (not a re-serialisation) means no canonical-JSON rules are needed: whatever the
vendor's tool wrote is what is verified. `read` checks, in this order, the envelope, the
signature, the payload's fields, the installation it was issued for, the clock and the expiry,
and says which one failed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from facegrid.licence_terms import FEATURES
from facegrid.licensing.core import RESOURCES, Licence, LicenceError

FORMAT = "facegrid-licence/1"
# How far a licence's `generated` time may lie ahead of this machine's clock.
CLOCK_SKEW = 300.0


def new_key_pair() -> tuple[bytes, bytes]:
    """A vendor key pair as PEM: (private, public)."""
    private = Ed25519PrivateKey.generate()
    return (
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the public key is not an Ed25519 key")
    return key


def private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the private key is not an Ed25519 key")
    return key


def issue(key: Ed25519PrivateKey, licence: Licence) -> bytes:
    """The licence file for licence, signed with the vendor's key."""
    payload = json.dumps(_payload_of(licence), indent=2, sort_keys=True).encode()
    envelope = {
        "format": FORMAT,
        "payload": base64.b64encode(payload).decode(),
        "signature": base64.b64encode(key.sign(payload)).decode(),
    }
    return json.dumps(envelope, indent=2).encode() + b"\n"


def read(
    data: bytes,
    key: Ed25519PublicKey,
    *,
    installation: str | None,
    now: float,
    skew: float = CLOCK_SKEW,
) -> Licence:
    """The licence in a licence file, checked (for installation, unless None); LicenceError
    says why it cannot be used."""
    try:
        envelope = json.loads(data)
        if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
            raise ValueError
        payload = base64.b64decode(envelope["payload"], validate=True)
        signature = base64.b64decode(envelope["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise LicenceError(f"not a FaceGrid licence file ({FORMAT})") from None
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        raise LicenceError(
            "the licence's signature does not match: it was changed after signing, "
            "or signed by another vendor key"
        ) from None
    licence = _licence_of(payload)
    if installation is not None and licence.installation not in ("", installation):
        raise LicenceError(
            f"the licence was issued for installation {licence.installation}; "
            f"this is installation {installation}"
        )
    if licence.generated > now + skew:
        raise LicenceError(
            f"the licence was generated {licence.generated - now:.0f} s in the future "
            f"({_iso(licence.generated)}): check this machine's clock"
        )
    if licence.expires is not None and now >= licence.expires:
        raise LicenceError(f"the licence expired on {_iso(licence.expires)}")
    return licence


def _payload_of(licence: Licence) -> dict[str, Any]:
    return {
        "license_id": licence.license_id,
        "customer": licence.customer,
        "installation": licence.installation,
        "generated": int(licence.generated),
        "expires": None if licence.expires is None else int(licence.expires),
        "limits": dict(licence.limits),
        "features": {f: f in licence.features for f in FEATURES},
    }


def _licence_of(payload: bytes) -> Licence:
    """The payload's fields, type-checked (a signed payload can still be malformed)."""
    try:
        fields = json.loads(payload)
        limits = fields["limits"]
        features = fields["features"]
        expires = fields["expires"]
        if not (
            isinstance(fields["license_id"], str)
            and isinstance(fields["customer"], str)
            and isinstance(fields["installation"], str)
            and _is_number(fields["generated"])
            and (expires is None or _is_number(expires))
            and isinstance(limits, dict)
            and all(k in RESOURCES and _is_count(v) for k, v in limits.items())
            and isinstance(features, dict)
            and all(k in FEATURES and isinstance(v, bool) for k, v in features.items())
        ):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise LicenceError("the licence's payload is malformed") from None
    return Licence(
        license_id=fields["license_id"],
        customer=fields["customer"],
        installation=fields["installation"],
        generated=float(fields["generated"]),
        expires=None if expires is None else float(expires),
        limits={k: int(v) for k, v in limits.items()},
        features=frozenset(k for k, v in features.items() if v),
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")
