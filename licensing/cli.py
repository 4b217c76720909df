"""`facegrid license ...`: vendor key pairs, issuing licence files, and verifying them.

    facegrid license keygen --private vendor.pem --public vendor.pub.pem
    facegrid license issue --key vendor.pem --customer ACME --faces 1000000 --cameras 16 \\
        --days 365 [--installation ID] [--no-emotions] -o acme.lic
    facegrid license verify acme.lic [--public-key vendor.pub.pem] [--installation ID]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from facegrid.licence_terms import FEATURES
from facegrid.licensing import signing, sources
from facegrid.licensing.core import RESOURCES, Licence, LicenceError


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    licence = sub.add_parser("license", help="licence files: keygen, issue, verify")
    commands = licence.add_subparsers(dest="license_command", required=True)

    keygen = commands.add_parser("keygen", help="make a vendor Ed25519 key pair (PEM)")
    keygen.add_argument("--private", type=Path, required=True, help="file for the private key")
    keygen.add_argument("--public", type=Path, required=True, help="file for the public key")
    keygen.set_defaults(func=cmd_keygen)

    issue = commands.add_parser("issue", help="sign a licence file with the vendor key")
    issue.add_argument("--key", type=Path, required=True, help="the vendor private key (PEM)")
    issue.add_argument("--customer", required=True)
    issue.add_argument("--license-id", default="", help="default: a new random id")
    issue.add_argument(
        "--installation", default="", help="the installation it is for (default: any)"
    )
    issue.add_argument("--days", type=float, help="valid for this many days (default: forever)")
    for resource in RESOURCES:
        issue.add_argument(f"--{resource}", type=int, help=f"limit of {resource} (default: none)")
    for feature in FEATURES:
        issue.add_argument(
            f"--no-{feature}", action="store_true", help=f"leave out the {feature} feature"
        )
    issue.add_argument("-o", "--out", type=Path, required=True, help="the licence file to write")
    issue.set_defaults(func=cmd_issue)

    verify = commands.add_parser("verify", help="check a licence file and print what it allows")
    verify.add_argument("file", type=Path)
    verify.add_argument(
        "--public-key", type=Path, help="the vendor public key (default: FaceGrid's own)"
    )
    verify.add_argument(
        "--installation", help="check it is for this installation (default: do not check)"
    )
    verify.set_defaults(func=cmd_verify)


def cmd_keygen(args: argparse.Namespace) -> int:
    private, public = signing.new_key_pair()
    fd = os.open(args.private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    args.public.write_bytes(public)
    print(f"private key: {args.private} (keep it secret)\npublic key: {args.public}")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    try:
        key = signing.private_key(args.key.read_bytes())
    except (OSError, ValueError) as e:
        print(f"facegrid license issue: cannot use {args.key}: {e}", file=sys.stderr)
        return 2
    now = time.time()
    limits = {r: getattr(args, r) for r in RESOURCES if getattr(args, r) is not None}
    if any(v < 0 for v in limits.values()):
        print("facegrid license issue: limits cannot be negative", file=sys.stderr)
        return 2
    licence = Licence(
        license_id=args.license_id or uuid.uuid4().hex,
        customer=args.customer,
        generated=now,
        expires=None if args.days is None else now + args.days * 86400,
        installation=args.installation,
        limits=limits,
        features=frozenset(f for f in FEATURES if not getattr(args, f"no_{f.replace('-', '_')}")),
    )
    args.out.write_bytes(signing.issue(key, licence))
    print(f"licence {licence.license_id} for {licence.customer}: {args.out}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        pem = args.public_key.read_bytes() if args.public_key else sources.VENDOR_PUBLIC_KEY
        key = signing.public_key(pem)
        data = args.file.read_bytes()
    except (OSError, ValueError) as e:
        print(f"facegrid license verify: {e}", file=sys.stderr)
        return 2
    try:
        licence = signing.read(data, key, installation=args.installation, now=time.time())
    except LicenceError as e:
        print(f"{args.file}: not valid: {e}", file=sys.stderr)
        return 1
    summary = {
        "license_id": licence.license_id,
        "customer": licence.customer,
        "installation": licence.installation or "any",
        "generated": int(licence.generated),
        "expires": None if licence.expires is None else int(licence.expires),
        "limits": {r: licence.limits.get(r, "unlimited") for r in RESOURCES},
        "features": sorted(licence.features),
    }
    print(json.dumps(summary, indent=2))
    return 0
