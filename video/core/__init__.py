"""The video worker's logic, free of I/O: options, geometry, motion, tracking, the best face."""
