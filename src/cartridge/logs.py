"""Logging set-up: rich console lines for people, JSON lines for machines.

JSON lines come with `--log-json` or CARTRIDGE_LOG_JSON=true (what the cluster
manifests and the pipeline's steps set), one object per line with `time`, `level`,
`name`, `message` and the fields of the work in hand: `game`, `run` (the KFP run),
`iteration`, `shard`, `model` (a registry version URI), set with `log_fields` or, for
the functions pipeline steps run, by `pipeline_step`. Uvicorn's server and access logs
go through the same handler.
"""

from __future__ import annotations

import functools
import inspect
import logging
import logging.config
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

NOISY = ("onnxscript", "onnx_ir", "torch.onnx", "alembic", "mlflow.store.db.utils")
_FIELDS: ContextVar[tuple[tuple[str, object], ...]] = ContextVar("log_fields", default=())
# A step function's parameter -> the field it fills.
STEP_FIELDS = {
    "game_name": "game",
    "pipeline_run_id": "run",
    "iteration": "iteration",
    "shard": "shard",
    "challenger": "model",
}


def json_from_environment() -> bool:
    return os.environ.get("CARTRIDGE_LOG_JSON", "").lower() in ("1", "true", "yes")


class ContextFields(logging.Filter):
    """Adds the current `log_fields` to every record (JSON lines print them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _FIELDS.get():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


@contextmanager
def log_fields(**fields) -> Iterator[None]:
    """Every log line inside the block carries `fields` (None and '' are left out)."""
    kept = {key: value for key, value in fields.items() if value not in (None, "")}
    token = _FIELDS.set(tuple({**dict(_FIELDS.get()), **kept}.items()))
    try:
        yield
    finally:
        _FIELDS.reset(token)


def _console_handler() -> logging.Handler:
    from rich.console import Console
    from rich.logging import RichHandler

    # On stderr, like the JSON lines: stdout is for a command's results (`--json`).
    return RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)


def logging_config(level: str = "INFO", json_lines: bool = False) -> dict:
    """The `logging.config.dictConfig` for this process, also handed to uvicorn so that
    its workers log the same way."""
    level = level.upper()
    if json_lines:
        from pythonjsonlogger.core import RESERVED_ATTRS

        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level"},
            "timestamp": "time",  # ISO 8601, UTC
            # Uvicorn's copy of each message with terminal colours.
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        }
        handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    else:
        formatter = {"format": "%(message)s"}
        handler = {"()": "cartridge.logs._console_handler"}
    quiet = logging.getLevelName(max(logging.WARNING, logging.getLevelName(level)))
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "cartridge.logs.ContextFields"}},
        "formatters": {"default": formatter},
        "handlers": {"default": {**handler, "formatter": "default", "filters": ["context"]}},
        "root": {"level": level, "handlers": ["default"]},
        "loggers": {
            **{name: {"level": quiet} for name in NOISY},
            # Uvicorn's own handlers would bypass the formatter: its loggers propagate.
            **{
                name: {"level": level, "handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
        },
    }


_configured = {"level": "INFO", "json_lines": False}


def current_logging_config() -> dict:
    """The configuration `configure_logging` last applied (for uvicorn's workers)."""
    return logging_config(**_configured)


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    _configured.update(level=level, json_lines=json_lines)
    for handler in logging.getLogger().handlers[:]:  # replace what was set (KFP's executor)
        logging.getLogger().removeHandler(handler)
    logging.config.dictConfig(logging_config(level, json_lines))


_step_logging_configured = False  # once per process: a step's own set-up, not KFP's


def pipeline_step(function):
    """For the library functions pipeline steps run: JSON logs when the environment asks
    (KFP's executor has already set up plain lines), and the step's game, run,
    iteration, shard and model on every line."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def step(*args, **kwargs):
        global _step_logging_configured
        if json_from_environment() and not _step_logging_configured:
            configure_logging(os.environ.get("CARTRIDGE_LOG_LEVEL", "INFO"), json_lines=True)
            _step_logging_configured = True
        bound = signature.bind_partial(*args, **kwargs).arguments
        fields = {field: bound[name] for name, field in STEP_FIELDS.items() if name in bound}
        with log_fields(**fields):
            return function(*args, **kwargs)

    return step
