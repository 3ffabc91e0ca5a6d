"""The local stack: S3 object store and MLflow server on 127.0.0.1, state under .cartridge/."""

from cartridge.stack.config import StackConfig, client_environment
from cartridge.stack.manager import StackError, down, status, up, use_running_stack

__all__ = [
    "StackConfig",
    "StackError",
    "client_environment",
    "down",
    "status",
    "up",
    "use_running_stack",
]
