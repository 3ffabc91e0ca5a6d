"""Checks for the cluster deliverables (manifests, images, workflows)."""
