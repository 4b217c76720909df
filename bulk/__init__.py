"""Bulk tools that work through the public REST API: `facegrid mass-enroll`."""
