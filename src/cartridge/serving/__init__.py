"""Serving the champion: Triton control, the bot's search, and the lineage the web shows."""
