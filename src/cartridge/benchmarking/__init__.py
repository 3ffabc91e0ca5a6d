"""Throughput measurements behind `cartridge bench`, each with its baseline in the same run."""
