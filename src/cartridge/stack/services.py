"""The servers of the local stack: how each starts, which ports it binds, how it shows health."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import sysconfig
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cartridge.stack.config import (
    Credentials,
    StackConfig,
    client_environment,
    seaweed_identities,
)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    url: str
    command: list[str]
    ports: dict[str, int]
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    # Files and folders the command needs, made just before it starts (not whenever a
    # spec is built, e.g. by `status`).
    prepare: Callable[[], None] = lambda: None


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def s3_answers(config: StackConfig, credentials: Credentials) -> bool:
    """True once the store accepts our keys (an authenticated ListBuckets succeeds)."""
    client = _keyed_client(config, credentials)
    try:
        client.list_buckets()
        return True
    except (BotoCoreError, ClientError):
        return False


def _keyed_client(config: StackConfig, credentials: Credentials):
    """A client with the stack's own keys: the caller's environment may point elsewhere."""
    return boto3.client(
        "s3",
        endpoint_url=config.s3_url,
        aws_access_key_id=credentials.access_key,
        aws_secret_access_key=credentials.secret_key,
        region_name="us-east-1",
        config=Config(
            connect_timeout=1,
            read_timeout=5,
            retries={"max_attempts": 1},
            s3={"addressing_style": "path"},
        ),
    )


def ensure_bucket(config: StackConfig, credentials: Credentials) -> None:
    """The bucket, and a folder marker for Triton's repository: Triton refuses to start
    on a repository path with no object under it."""
    client = _keyed_client(config, credentials)
    try:
        client.head_bucket(Bucket=config.bucket)
    except ClientError:
        try:
            client.create_bucket(Bucket=config.bucket)
        except (
            client.exceptions.BucketAlreadyOwnedByYou,
            client.exceptions.BucketAlreadyExists,
        ):
            # Seen on a loaded machine with SeaweedFS: HEAD said 404 and CREATE found
            # the bucket there (it answers with either code). The marker written next
            # fails if the bucket is not ours after all.
            pass
    client.put_object(Bucket=config.bucket, Key="triton/", Body=b"")


def object_store(config: StackConfig, credentials: Credentials) -> ServiceSpec:
    """MinIO when a `minio` binary is on PATH (what the cluster runs), else SeaweedFS."""
    data = (config.stack_dir / "s3-data").resolve()
    host, port = config.host, config.s3_port
    minio = shutil.which("minio")
    if minio:
        return ServiceSpec(
            name="s3",
            url=config.s3_url,
            command=[
                minio,
                "server",
                str(data),
                "--address",
                f"{host}:{port}",
                "--console-address",
                f"{host}:{port + 1}",
            ],
            ports={"s3 api": port, "minio console": port + 1},
            healthy=lambda: s3_answers(config, credentials),
            env={
                "MINIO_ROOT_USER": credentials.access_key,
                "MINIO_ROOT_PASSWORD": credentials.secret_key,
            },
            prepare=lambda: data.mkdir(parents=True, exist_ok=True),
        )
    identities = (config.stack_dir / "s3-identities.json").resolve()
    sockets = (config.stack_dir / "run").resolve()
    # weed reads security.toml from its working directory (the stack directory).
    security = (config.stack_dir / "security.toml").resolve()

    def prepare() -> None:
        data.mkdir(parents=True, exist_ok=True)
        sockets.mkdir(parents=True, exist_ok=True)
        _write_private(identities, seaweed_identities(credentials))
        _write_private(security, seaweed_security())

    # weed mini runs master, volume, filer, S3 and admin servers; pin every port
    # (gRPC ones included) next to the S3 port so stacks side by side never collide.
    ports = {
        "s3 api": port,
        "master": port + 1,
        "volume": port + 2,
        "filer": port + 3,
        "admin": port + 4,
        "s3 grpc": port + 10,
        "master grpc": port + 11,
        "volume grpc": port + 12,
        "filer grpc": port + 13,
        "admin grpc": port + 14,
    }
    weed = Path(sys.executable).with_name("weed")
    if not weed.exists():
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError(f"the local object store needs SeaweedFS's `weed`: {STACK_EXTRA}")
    return ServiceSpec(
        name="s3",
        url=config.s3_url,
        command=[
            str(weed),
            "mini",
            f"-dir={data}",
            f"-ip={host}",
            f"-ip.bind={host}",
            f"-s3.port={port}",
            f"-s3.port.grpc={port + 10}",
            f"-master.port={port + 1}",
            f"-master.port.grpc={port + 11}",
            f"-volume.port={port + 2}",
            f"-volume.port.grpc={port + 12}",
            f"-filer.port={port + 3}",
            f"-filer.port.grpc={port + 13}",
            f"-admin.port={port + 4}",
            f"-admin.port.grpc={port + 14}",
            f"-s3.config={identities}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            f"-bucket={config.bucket}",
            f"-filer.localSocket={sockets / 'filer.sock'}",
            f"-s3.localSocket={sockets / 's3.sock'}",
        ],
        ports=ports,
        healthy=lambda: s3_answers(config, credentials),
        prepare=prepare,
    )


def seaweed_security() -> str:
    """SeaweedFS's security.toml with fresh signing keys. Only the S3 port checks the
    stack's access keys; without these, the filer and volume HTTP ports read, write and
    delete the bucket's objects (the Triton repository's model.py among them) for any
    local process. With them, both refuse requests without a JWT signed by these keys,
    which only SeaweedFS's own servers hold. New keys at every start: they sign access,
    not data."""
    sections = ("jwt.signing", "jwt.signing.read", "jwt.filer_signing", "jwt.filer_signing.read")
    return "".join(f'[{name}]\nkey = "{secrets.token_hex(32)}"\n\n' for name in sections)


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)


def mlflow_server(config: StackConfig, credentials: Credentials) -> ServiceSpec:
    """Tracking server and registry: SQLite metadata, artifacts proxied into the bucket,
    so clients need only MLFLOW_TRACKING_URI."""
    database = (config.stack_dir / "mlflow.db").resolve()
    return ServiceSpec(
        name="mlflow",
        url=config.mlflow_url,
        command=[
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{database}",
            "--artifacts-destination",
            config.artifacts_uri,
            "--serve-artifacts",
            "--workers",
            "1",
            "--host",
            config.host,
            "--port",
            str(config.mlflow_port),
        ],
        ports={"mlflow": config.mlflow_port},
        healthy=lambda: http_ok(f"{config.mlflow_url}/health"),
        env={
            # The job runner would start about 2 GB of workers nobody here uses.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": credentials.webhook_encryption_key,
            # The web app's webhook route is plain HTTP on loopback: allowed here only.
            "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
            "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            # MLflow caches its webhook list (60 s by default): a change applies sooner.
            "MLFLOW_WEBHOOK_CACHE_TTL": "2",
            "MLFLOW_S3_ENDPOINT_URL": config.s3_url,
            "AWS_ACCESS_KEY_ID": credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )


# The servers only the local stack runs come in an optional extra, which the cluster
# image leaves out (it runs MinIO and the official Triton image instead).
STACK_EXTRA = "install the `stack` extra: pip install 'cartridge[stack]' (`make install` does)"


def _pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as error:
        raise RuntimeError(f"the local Triton needs nvidia-pytriton: {STACK_EXTRA}") from error
    return Path(pytriton.__file__).resolve().parent


def _copy_triton_backends(root: Path, backends: Path) -> None:
    """A copy of the wheel's backends folder whose python stub matches this interpreter:
    the wheel ships one stub per Python version beside the default one."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise RuntimeError(f"the Triton wheel has no python backend stub for Python {version}")
    target = backends / "python" / "triton_python_backend_stub"
    if not target.is_file() or target.stat().st_size != stub.stat().st_size:
        shutil.copytree(root / "tritonserver" / "backends", backends, dirs_exist_ok=True)
        shutil.copy2(stub, target)


def triton_server(config: StackConfig, credentials: Credentials) -> ServiceSpec:
    """The standalone `tritonserver` from the nvidia-pytriton wheel: explicit model
    control over the S3 repository that promotion writes, python backend only."""
    root = _pytriton_root()
    backends = (config.stack_dir / "triton-backends").resolve()
    port = config.triton_port
    host = config.host
    library_dirs = [
        str(root.parent / "nvidia_pytriton.libs"),
        # The stub links libpython; point it at this interpreter's, not whatever is first.
        str(sysconfig.get_config_var("LIBDIR")),
        os.environ.get("LD_LIBRARY_PATH", ""),
    ]
    return ServiceSpec(
        name="triton",
        url=config.triton_url,
        command=[
            str(root / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={config.triton_repository}",
            "--model-control-mode=explicit",
            f"--backend-directory={backends}",
            f"--http-address={host}",
            f"--http-port={port}",
            f"--grpc-address={host}",
            f"--grpc-port={port + 1}",
            f"--metrics-address={host}",
            f"--metrics-port={port + 2}",
            "--allow-cpu-metrics=true",
            "--log-verbose=0",
        ],
        ports={"triton http": port, "triton grpc": port + 1, "triton metrics": port + 2},
        healthy=lambda: http_ok(f"{config.triton_url}/v2/health/ready"),
        env={
            "AWS_ACCESS_KEY_ID": credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "LD_LIBRARY_PATH": ":".join(d for d in library_dirs if d),
            # The python backend runs model.py with the interpreter found on PATH:
            # this one, whose environment has onnxruntime and numpy.
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        },
        prepare=lambda: _copy_triton_backends(root, backends),
    )


def web_server(config: StackConfig, credentials: Credentials) -> ServiceSpec:
    """The web API and browser UI (`cartridge serve`), talking to this stack's servers."""
    return ServiceSpec(
        name="web",
        url=config.web_url,
        command=[
            sys.executable,
            "-m",
            "cartridge",
            "serve",
            "--host",
            config.host,
            "--port",
            str(config.web_port),
        ],
        ports={"web": config.web_port},
        healthy=lambda: http_ok(f"{config.web_url}/healthz"),
        env={
            **client_environment(config),
            "CARTRIDGE_WEBHOOK_SECRET": credentials.webhook_secret,
            "CARTRIDGE_WEBHOOK_URL": f"{config.web_url}/api/webhooks/mlflow",
        },
    )


def stack_services(config: StackConfig, credentials: Credentials) -> list[ServiceSpec]:
    """In start order: MLflow writes artifacts into the store, Triton reads its
    repository from the store, the web app talks to Triton and MLflow."""
    return [
        object_store(config, credentials),
        mlflow_server(config, credentials),
        triton_server(config, credentials),
        web_server(config, credentials),
    ]
