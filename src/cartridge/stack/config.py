"""Where the local stack keeps its state and which ports it binds."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_HOME = Path(".cartridge")


class StackConfig(BaseModel):
    """Ports and paths of the local stack. Every server binds to `host` only.

    Defaults follow each server's convention (S3 on 9000 as MinIO does, MLflow on
    5000, Triton's HTTP/gRPC/metrics on 8000/8001/8002, the web app on 8080) and can be
    overridden with CARTRIDGE_HOME, CARTRIDGE_S3_PORT, CARTRIDGE_MLFLOW_PORT,
    CARTRIDGE_TRITON_PORT (gRPC and metrics take the next two) and CARTRIDGE_WEB_PORT,
    or the matching command-line options.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = DEFAULT_HOME
    host: str = "127.0.0.1"
    s3_port: int = Field(9000, ge=1024, le=65000)
    mlflow_port: int = Field(5000, ge=1024, le=65535)
    triton_port: int = Field(8000, ge=1024, le=65533)
    web_port: int = Field(8080, ge=1024, le=65535)
    bucket: str = "cartridge"

    @classmethod
    def from_env(cls, **overrides) -> StackConfig:
        values = {
            "home": os.environ.get("CARTRIDGE_HOME"),
            "s3_port": os.environ.get("CARTRIDGE_S3_PORT"),
            "mlflow_port": os.environ.get("CARTRIDGE_MLFLOW_PORT"),
            "triton_port": os.environ.get("CARTRIDGE_TRITON_PORT"),
            "web_port": os.environ.get("CARTRIDGE_WEB_PORT"),
        }
        values.update(overrides)
        return cls(**{k: v for k, v in values.items() if v is not None})

    @property
    def stack_dir(self) -> Path:
        return self.home / "stack"

    @property
    def s3_url(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def triton_url(self) -> str:
        return f"http://{self.host}:{self.triton_port}"

    @property
    def triton_grpc_url(self) -> str:
        return f"{self.host}:{self.triton_port + 1}"

    @property
    def triton_metrics_url(self) -> str:
        return f"http://{self.host}:{self.triton_port + 2}/metrics"

    @property
    def triton_repository(self) -> str:
        """The model repository as Triton spells an S3 endpoint: s3://host:port/bucket/path."""
        return f"s3://{self.host}:{self.s3_port}/{self.bucket}/triton"

    @property
    def web_url(self) -> str:
        return f"http://{self.host}:{self.web_port}"

    @property
    def artifacts_uri(self) -> str:
        return f"s3://{self.bucket}/mlflow"


class Credentials(BaseModel):
    access_key: str
    secret_key: str
    # Signs MLflow's webhook deliveries to the web app.
    webhook_secret: str = ""
    # MLflow stores webhook secrets encrypted with this Fernet key; a key made anew at
    # each start would leave the stored secret unreadable after a restart.
    webhook_encryption_key: str = ""


def _new_secrets(credentials: Credentials | None) -> Credentials:
    import base64

    values = credentials.model_dump() if credentials else {}
    values.setdefault("access_key", "cartridge-" + secrets.token_hex(6))
    values.setdefault("secret_key", secrets.token_urlsafe(30))
    values["webhook_secret"] = values.get("webhook_secret") or secrets.token_urlsafe(30)
    values["webhook_encryption_key"] = values.get("webhook_encryption_key") or (
        base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    )
    return Credentials(**values)


def load_or_create_credentials(config: StackConfig) -> Credentials:
    """The stack's keys and secrets: made once per state directory (the ones a state
    directory from an older version lacks are added), readable only by the owner."""
    path = config.stack_dir / "credentials.json"
    found = Credentials.model_validate_json(path.read_text()) if path.exists() else None
    credentials = _new_secrets(found)
    if credentials == found:
        return credentials
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".new")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(credentials.model_dump_json())
    partial.replace(path)  # whole or not at all
    return credentials


def client_environment(config: StackConfig) -> dict[str, str]:
    """What a client needs: the tracking URI, for direct S3 access the endpoint and keys,
    and Triton's endpoints plus the backend its repository is written for (the local
    server has only the python backend)."""
    credentials = load_or_create_credentials(config)
    return {
        "MLFLOW_TRACKING_URI": config.mlflow_url,
        "AWS_ENDPOINT_URL": config.s3_url,
        "AWS_ACCESS_KEY_ID": credentials.access_key,
        "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "CARTRIDGE_BUCKET": config.bucket,
        "CARTRIDGE_TRITON_URL": config.triton_url,
        "CARTRIDGE_TRITON_GRPC_URL": config.triton_grpc_url,
        "CARTRIDGE_TRITON_BACKEND": "python",
    }


def seaweed_identities(credentials: Credentials) -> str:
    """SeaweedFS's S3 identity file: one identity with full rights on every bucket."""
    return json.dumps(
        {
            "identities": [
                {
                    "name": "cartridge",
                    "credentials": [
                        {"accessKey": credentials.access_key, "secretKey": credentials.secret_key}
                    ],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
    )
