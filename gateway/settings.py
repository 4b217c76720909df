"""The gateway's settings (FACEGRID_GATEWAY_*); the only module that reads them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from facegrid.settings import (
    HostPort,
    HostPorts,
    Networks,
    ProxyUrl,
    Replicas,
    ServiceSettings,
)


class GatewaySettings(ServiceSettings):
    section = "gateway"

    # 8000 is the port the seed's findface-facenapi answers on.
    listen: HostPort = Field("127.0.0.1:8000", description="HTTP address of the REST API")
    reuse_port: bool = Field(
        False,
        description="bind the API port with SO_REUSEPORT, so that several gateway processes on "
        "one machine serve it together (the kernel spreads connections over them)",
    )
    mongo_uri: str = Field("mongodb://127.0.0.1:27017", description="MongoDB connection URI")
    mongo_db: str = Field("facegrid", min_length=1, description="MongoDB database name")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL")
    media_dir: Path | None = Field(
        None,
        description="folder for stored photos and normalized faces (one gateway); unset keeps "
        "them in MongoDB's GridFS, which gateway replicas share",
    )
    controlplane: HostPort = Field("127.0.0.1:50050", description="ControlPlane gRPC address")
    extractor: Replicas = Field(
        "127.0.0.1:18665",
        description="the extractors' gRPC address: a name (every address DNS gives it, as for a "
        "headless Service) or ip:port,ip:port; calls go to each in turn",
    )
    extra_extractors: HostPorts = Field(
        default_factory=list,
        description=(
            "extractors serving other models (comma-separated gRPC addresses, each spread over "
            "what DNS gives it), for galleries a model migration builds or has switched to "
            "another model"
        ),
    )
    index_refresh: float = Field(
        1.0,
        gt=0,
        le=60,
        description="seconds a gateway keeps the galleries' index plans before reading them again",
    )
    licensing: HostPort = Field("127.0.0.1:3133", description="Licensing gRPC address")
    license_grace: float = Field(
        300.0,
        gt=0,
        description="seconds to keep working on the last licence while licensing is unreachable",
    )
    call_timeout: float = Field(
        10.0, gt=0, le=300, description="seconds to wait for a backend service call"
    )
    search_timeout: float = Field(
        5.0, gt=0, le=60, description="seconds a search may wait for the index shards"
    )
    fetch_timeout: float = Field(
        10.0, gt=0, le=120, description="seconds to fetch a photo given by URL"
    )
    fetch_proxy: ProxyUrl = Field(
        "",
        description="an HTTP proxy (http://host:port) photo URLs are fetched through, as the "
        "seed's fetch_proxy; the photo's address is still checked",
    )
    fetch_allow: Networks = Field(
        default_factory=list,
        description=(
            "networks (comma-separated CIDRs) photo URLs may point into although not public; "
            "loopback, private and link-local addresses are refused otherwise"
        ),
    )
    # The seed's facenapi `gae` (off there by default; FaceGrid's bundle always has the models).
    gae: bool = Field(
        True, description="serve v1's gender, age and emotions flags; false: they are ignored"
    )
    # The seed's facenapi setting: the `strict` parameter of /identify overrides it. Its
    # /identify reference documents `strict` as false by default, and so is FaceGrid's default.
    tntapi_ignore_search_errors: bool = Field(
        True,
        description="identify answers from the live shards when some are out of service (and "
        "says how many in X-Live-Servers); false: it fails unless the request says strict=false",
    )
    person_identify: bool = Field(
        False,
        description="dynamic person creation: give each added face a person (per camera; faces "
        "without a cam_id count as one more camera)",
    )
    person_identify_global: bool = Field(
        False, description="identify persons across all cameras instead of per camera"
    )
    person_identify_threshold: float = Field(
        0.75, ge=0, le=1, description="confidence at which a face joins an existing person"
    )
    friend_count: int = Field(
        5, ge=1, description="days a person must be seen by a camera to be its friend"
    )
    friend_interval: float = Field(
        604800, gt=0, description="seconds looked back for friend_count days (a week)"
    )
    public_url: str = Field(
        "",
        description=(
            "the gateway's address as clients reach it (e.g. https://faces.example.com), the "
            "base of the photo URLs in replies (the seed's ffupload_url) and in webhook and live "
            "events; empty: replies use the address each request came to, events paths only"
        ),
    )
    webhook_attempts: int = Field(6, ge=1, le=20, description="deliveries tried per event")
    webhook_first_delay: float = Field(
        1.0, gt=0, description="seconds before the second attempt; doubling after"
    )
