"""The extractor's settings (FACEGRID_EXTRACTOR_*); the only module that reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from facegrid.images import MAX_BYTES
from facegrid.settings import (
    CommaList,
    HostPort,
    LicensedSettings,
    Networks,
    OptionalHostPort,
    ProxyUrl,
)


class ExtractorSettings(LicensedSettings):
    section = "extractor"

    listen: HostPort = Field("127.0.0.1:18665", description="gRPC address to serve on")
    # 18666 is where the seed's Extraction API answered; clients of it work unchanged.
    http_listen: OptionalHostPort = Field(
        "127.0.0.1:18666", description="HTTP address of the Extraction API; empty to disable"
    )
    # The seed's model_instances ran several detector and model instances behind the
    # Extraction API's one port; here several extractor processes share it.
    http_reuse_port: bool = Field(
        False,
        description="let other extractor processes serve the Extraction API on the same port "
        "(SO_REUSEPORT): the kernel hands each new connection to one of them",
    )
    quality_estimator: bool = Field(
        False, description="Extraction API: detection_score is the face quality, not confidence"
    )
    fetch_enabled: bool = Field(
        True, description="Extraction API: fetch images given as http(s) URLs"
    )
    # The seed's `fetch: size_limit`. Photos are refused above 10 MB when decoded anyway, so it
    # can only be lowered.
    fetch_size_limit: int = Field(
        MAX_BYTES,
        ge=1,
        le=MAX_BYTES,
        description="Extraction API: largest image fetched by URL, in bytes (at most 10485760)",
    )
    fetch_proxy: ProxyUrl = Field(
        "",
        description="Extraction API: an HTTP proxy (http://host:port) images are fetched through",
    )
    fetch_allow: Networks = Field(
        default_factory=list,
        description=(
            "Extraction API: networks (comma-separated CIDRs) image URLs may point into "
            "although not public"
        ),
    )
    metrics_listen: OptionalHostPort = Field(
        "127.0.0.1:19666", description="HTTP address for /metrics; empty to disable"
    )
    model_dir: Path | None = Field(
        None, description="folder of a built model bundle (manifest.json); unset serves no models"
    )
    device: Literal["cpu", "cuda"] = Field(
        "cpu",
        description="where models run; 'cuda' without a usable GPU reports NOT_SERVING, "
        "it never falls back to the CPU silently",
    )
    threads: int = Field(0, ge=0, le=256, description="onnxruntime threads per model; 0 = auto")
    max_connection_age: float = Field(
        60.0,
        ge=0,
        le=86400,
        description="seconds a client's connection lasts before the client is asked to "
        "reconnect, so that clients spread their calls over replicas started since; 0: for ever",
    )
    cuda_conv_algo_search: Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"] = Field(
        "HEURISTIC",
        description="how cuDNN picks convolution algorithms; EXHAUSTIVE times them all for each "
        "new input shape, which the detector's pyramid and merged batches keep making",
    )
    cuda_tf32: bool = Field(
        False,
        description="TF32 convolutions on the GPU: faster, but face vectors move by about 2e-4 "
        "(measured on an H200) from the CPU's, which match dlib's to 1e-4",
    )
    spin: bool = Field(
        False,
        description="let onnxruntime's threads spin between runs: a little less latency on "
        "dedicated cores, CPU taken from other processes on shared ones",
    )
    max_batch: int = Field(64, ge=1, le=4096, description="most photos or faces in one call")
    model_batch: int = Field(
        256, ge=1, le=4096, description="most face chips merged into one face vector model run"
    )
    batch_wait_ms: float = Field(
        2.0,
        ge=0,
        le=1000,
        description="how long a face vector run waits for concurrent callers to join it",
    )
    # FindFace's documented minimum face is 50x50; smaller faces cost pyramid levels.
    min_face_size: int = Field(
        50, ge=8, le=4096, description="default smallest face side in pixels to detect"
    )
    # The seed's `nnd: max_face_size` (.inf there: no limit). A detection request's own
    # max_face_size wins; the Extraction API's requests have none, so this one applies to them.
    max_face_size: int = Field(
        0,
        ge=0,
        le=65535,
        description="default largest face side in pixels returned; 0 = no limit",
    )

    # The seed's nnd detector options (--nnd-p-net-thresh, --nnd-r-net-thresh,
    # --nnd-o-net-thresh, --nnd-scale-factor). FaceGrid's defaults are the MTCNN paper's, on
    # which its accuracy figures were measured.
    detect_thresholds: CommaList = Field(
        default_factory=lambda: ["0.6", "0.7", "0.7"],
        description="the face detector's P-Net, R-Net and O-Net score thresholds (comma-"
        "separated, each above 0 and below 1): higher finds fewer false faces and fewer faces",
    )
    detect_scale_factor: float = Field(
        0.709,
        ge=0.5,
        le=0.95,
        description="the ratio between the detector's pyramid levels: higher finds more faces "
        "in more time",
    )

    @field_validator("detect_thresholds")
    @classmethod
    def _three_scores(cls, value: list[str]) -> list[str]:
        try:
            scores = [float(v) for v in value]
        except ValueError:
            raise ValueError(f"{value}: not numbers") from None
        if len(scores) != 3 or not all(0 < s < 1 for s in scores):
            raise ValueError(f"{value}: three scores above 0 and below 1 are needed")
        return value

    @field_validator("max_face_size")
    @classmethod
    def _above_min_face_size(cls, value: int, info: ValidationInfo) -> int:
        smallest = info.data.get("min_face_size")
        if value and smallest is not None and value < smallest:
            raise ValueError(f"is below min_face_size ({smallest}); 0 means no limit")
        return value
