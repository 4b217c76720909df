"""The chart, the manifests and the images (tests/k8s/chart.py renders and validates)."""
