"""A real RTSP server (GStreamer's gst-rtsp-server, from Debian's packages) serving one H.264
MP4 file in a loop at rtsp://127.0.0.1:PORT/live. Run with the system Python, which has the
GObject bindings: /usr/bin/python3 rtsp_server.py PORT FILE
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

Gst.init(None)
port, path = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    f'( multifilesrc location="{path}" loop=true ! qtdemux ! h264parse '
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
print("serving", flush=True)
GLib.MainLoop().run()
