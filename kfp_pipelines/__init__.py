"""Kubeflow Pipelines definitions; the steps they run live in `cartridge.loop`."""
