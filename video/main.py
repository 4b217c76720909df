"""`facegrid-video`: a video worker, with the seed's fkvideo_detector options.

    facegrid-video -c /etc/fkvideo.ini
    facegrid-video --api-token TOKEN --camid door --source file@25:/videos/door.mp4 -r 0

Every option can also be set as FACEGRID_VIDEO_<NAME> (e.g. FACEGRID_VIDEO_DETECTOR_NAME), the
way Kubernetes passes settings; the ini file wins over those and the command line over both.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

import grpc
from prometheus_client import REGISTRY

from facegrid.licence import LicenceClient
from facegrid.observability import configure_logging, start_metrics_server
from facegrid.video.core.options import OptionError, Options, parse
from facegrid.video.sink import SinkUnavailable, load_av
from facegrid.video.worker import Worker

log = logging.getLogger(__name__)


async def serve(options: Options) -> None:
    if options.metrics_listen:
        start_metrics_server(options.metrics_listen, REGISTRY)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    licence = LicenceClient(
        grpc.aio.insecure_channel(options.license_ntls_server)
        if options.license_ntls_server
        else None,
        "video",
        f"video-{options.detector_name or options.camid}-{socket.gethostname()}-{os.getpid()}",
    )
    await licence.start()
    worker = Worker(options, REGISTRY, licence)
    if options.license_ntls_server:
        try:
            await licence.refresh()  # leases need the license server's answer first
        except grpc.aio.AioRpcError as e:
            log.warning("the license server does not answer yet: %s", e.details())
    try:
        await worker.run(stop)
    finally:
        worker.close()
        await licence.stop()
    for camera_id, pipeline in worker.finished.items():
        s = pipeline.stats
        log.info(
            "camera %s: %d frames, %d processed, %d dropped, %d posted, %d post errors",
            camera_id,
            s.frames_in,
            s.processed,
            s.dropped,
            s.posts,
            s.post_errors,
        )


def main(argv: list[str] | None = None) -> None:
    try:
        options = parse(sys.argv[1:] if argv is None else argv, os.environ)
        if options.sink_url and options.source:
            load_av()  # the one camera that streams is known: fail now, not later
    except (OptionError, SinkUnavailable) as e:
        print(f"facegrid-video: {e}", file=sys.stderr)
        sys.exit(2)
    configure_logging("video", options.log_level, options.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per post is too many
    asyncio.run(serve(options))
