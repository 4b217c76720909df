"""Video workers: capture, motion gate, detection, tracking and best-face posting."""
