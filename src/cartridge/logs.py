"""Logging set-up: rich console lines for people, JSON lines (`--log-json`) for machines."""

import logging

from pythonjsonlogger.json import JsonFormatter
from rich.console import Console
from rich.logging import RichHandler


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    handler: logging.Handler
    if json_lines:
        handler = logging.StreamHandler()
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level"},
            )
        )
    else:
        # On stderr, like the JSON lines: stdout is for a command's results (`--json`).
        handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Libraries that narrate their internals at INFO: keep their warnings only.
    for noisy in ("onnxscript", "onnx_ir", "torch.onnx", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
