"""`cartridge stack up | down | status`: start, stop and inspect the local servers.

Each server runs in its own session (process group) with its PID and start time
recorded in `<home>/stack/state.json`. `down` signals only those recorded
processes, and only while the PID still belongs to the process that was started
(same creation time), so it never touches anything it did not start. Data
directories stay in place.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
from pathlib import Path

import psutil
from pydantic import BaseModel
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from cartridge.stack.config import StackConfig, client_environment, load_or_create_credentials
from cartridge.stack.services import ServiceSpec, ensure_bucket, stack_services

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A server that could not start, or a port that is not ours to take."""


class ServiceRecord(BaseModel):
    pid: int
    create_time: float
    url: str
    ports: dict[str, int]
    log: str


class ServiceStatus(BaseModel):
    url: str
    pid: int | None
    healthy: bool
    log: str | None = None


def _state_path(config: StackConfig) -> Path:
    return config.stack_dir / "state.json"


def _load_state(config: StackConfig) -> dict[str, ServiceRecord]:
    path = _state_path(config)
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {name: ServiceRecord.model_validate(record) for name, record in raw.items()}
    except (ValueError, TypeError) as error:
        raise StackError(
            f"{path} is unreadable ({error}); remove it after checking "
            "that no stack processes remain"
        ) from error


def _save_state(config: StackConfig, state: dict[str, ServiceRecord]) -> None:
    path = _state_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({k: v.model_dump() for k, v in state.items()}, indent=2))
    os.replace(partial, path)


def _our_process(record: ServiceRecord | None) -> psutil.Process | None:
    """The recorded process if it is still alive and still the one we started."""
    if record is None:
        return None
    try:
        process = psutil.Process(record.pid)
        if abs(process.create_time() - record.create_time) > 0.01:
            return None  # the PID now belongs to someone else
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process
    except psutil.Error:
        return None


def _port_owner(host: str, port: int) -> str:
    try:
        for connection in psutil.net_connections(kind="inet"):
            if connection.laddr and connection.laddr.port == port and connection.pid:
                if connection.status == psutil.CONN_LISTEN:
                    return f"pid {connection.pid} ({psutil.Process(connection.pid).name()})"
    except psutil.Error:
        pass
    return "another process"


def _port_free(host: str, port: int) -> bool:
    """Whether a server could listen there now. SO_REUSEADDR, as servers set it, so
    connections lingering in TIME_WAIT after a restart do not count as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
            return True
        except OSError:
            return False


def _check_ports(spec: ServiceSpec, host: str) -> None:
    for purpose, port in spec.ports.items():
        if not _port_free(host, port):
            option = f"--{spec.name}-port"
            raise StackError(
                f"cannot start {spec.name}: port {port} ({purpose}) on {host} is already in "
                f"use by {_port_owner(host, port)}; stop it or choose other ports with "
                f"{option} (or CARTRIDGE_{spec.name.upper()}_PORT)"
            )


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start(spec: ServiceSpec, config: StackConfig) -> ServiceRecord:
    logs = config.stack_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = (logs / f"{spec.name}.log").resolve()
    spec.prepare()
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            spec.command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **spec.env},
            cwd=config.stack_dir,
            start_new_session=True,  # own process group: down stops its children too
        )
    return ServiceRecord(
        pid=process.pid,
        create_time=psutil.Process(process.pid).create_time(),
        url=spec.url,
        ports=spec.ports,
        log=str(log_path),
    )


def _wait_healthy(spec: ServiceSpec, record: ServiceRecord, timeout: float) -> None:
    def check() -> bool:
        if _our_process(record) is None:
            raise StackError(
                f"{spec.name} exited during start-up; last log lines from "
                f"{record.log}:\n{_log_tail(Path(record.log))}"
            )
        return spec.healthy()

    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(0.25),
        retry=retry_if_result(lambda healthy: not healthy),  # an exception ends the wait
    )
    try:
        retrying(check)
    except RetryError:
        raise StackError(
            f"{spec.name} did not become healthy within {timeout:.0f} s; last "
            f"log lines from {record.log}:\n{_log_tail(Path(record.log))}"
        ) from None


def up(
    config: StackConfig, timeout: float = 120.0, only: tuple[str, ...] | None = None
) -> dict[str, ServiceStatus]:
    """Start whatever is not running yet and wait until every server is healthy;
    `only` names the services to start (in the stack's order), e.g. ("s3",)."""
    credentials = load_or_create_credentials(config)
    state = _load_state(config)
    services = stack_services(config, credentials)
    if only is not None:
        unknown = set(only) - {spec.name for spec in services}
        if unknown:
            raise ValueError(f"no stack service called {', '.join(sorted(unknown))}")
        services = [spec for spec in services if spec.name in only]
    # Every port is checked before anything starts, so a conflict leaves nothing behind.
    for spec in services:
        if _our_process(state.get(spec.name)) is None:
            _check_ports(spec, config.host)
    for spec in services:
        record = state.get(spec.name)
        if _our_process(record) is not None:
            log.info("%s already running (pid %d)", spec.name, record.pid)
        else:
            record = _start(spec, config)
            state[spec.name] = record
            _save_state(config, state)
            log.info("started %s (pid %d), waiting for it to answer", spec.name, record.pid)
        try:
            _wait_healthy(spec, record, timeout)
        except StackError:
            _stop(spec.name, record)
            state.pop(spec.name, None)
            _save_state(config, state)
            raise
        if spec.name == "s3":
            ensure_bucket(config, credentials)
        if spec.name == "triton":
            _load_published_models(config)
    return status(config)


def _load_published_models(config: StackConfig) -> None:
    """Explicit model control starts Triton empty: load every champion already published,
    so a restarted stack serves what it served before. A model that fails to load is
    reported and left out; the rest of the stack still comes up."""
    from cartridge.serving.triton import ModelUnavailable, TritonControl, TritonUnavailable

    control = TritonControl(config.triton_url)
    try:
        for game_name in control.published_games():
            try:
                control.load(game_name)
                log.info("Triton serves %s", game_name)
            except (ModelUnavailable, TritonUnavailable) as error:
                log.warning("Triton could not load %s: %s", game_name, error)
    except (ModelUnavailable, TritonUnavailable) as error:
        log.warning("could not list Triton's model repository: %s", error)
    finally:
        control.close()


def _stop(name: str, record: ServiceRecord, grace: float = 20.0) -> bool:
    process = _our_process(record)
    if process is None:
        return False
    members = [process, *process.children(recursive=True)]
    try:
        os.killpg(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    _, alive = psutil.wait_procs(members, timeout=grace)
    if alive:
        log.warning("%s ignored SIGTERM for %.0f s; killing it", name, grace)
        try:
            os.killpg(record.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for member in alive:
            try:
                member.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
    return True


def down(config: StackConfig) -> list[str]:
    """Stop the servers this stack started (newest first); data stays on disk."""
    state = _load_state(config)
    stopped = []
    for name in reversed(list(state)):
        if _stop(name, state[name]):
            stopped.append(name)
        state.pop(name)
        _save_state(config, state)
    return stopped


def status(config: StackConfig) -> dict[str, ServiceStatus]:
    """Each server's URL, PID (when it is ours and alive) and health."""
    credentials = load_or_create_credentials(config)
    state = _load_state(config)
    report = {}
    for spec in stack_services(config, credentials):
        record = state.get(spec.name)
        process = _our_process(record)
        report[spec.name] = ServiceStatus(
            url=spec.url,
            pid=process.pid if process else None,
            healthy=spec.healthy(),
            log=record.log if record else None,
        )
    return report


def use_running_stack(config: StackConfig) -> bool:
    """Point this process's clients at the local stack when it runs and nothing else is set.

    Explicit MLFLOW_TRACKING_URI / AWS_* settings always win, so the same commands
    talk to a cluster's MLflow and MinIO when those are configured.
    """
    state = _load_state(config)
    if not all(_our_process(state.get(name)) for name in ("s3", "mlflow")):
        return False
    for key, value in client_environment(config).items():
        os.environ.setdefault(key, value)
    return True
