#!/usr/bin/env bash
# Forward the cluster's consoles to 127.0.0.1, on the ports `cartridge stack up` uses:
#   web UI + API :8080, MLflow :5000, Triton HTTP :8000 / gRPC :8001 / metrics :8002,
#   MinIO S3 :9000 / console :9001.
# Usage: scripts/port-forward.sh [namespace]   (Ctrl-C stops every forward)
# For the same forwards during `skaffold dev`, skaffold.yaml declares them already.
set -euo pipefail

namespace="${1:-cartridge}"
forwards=(
  "web 8080:8080"
  "mlflow 5000:5000"
  "triton 8000:8000 8001:8001 8002:8002"
  "minio 9000:9000 9001:9001"
)

command -v kubectl >/dev/null || { echo "kubectl not found on PATH" >&2; exit 1; }
kubectl get namespace "$namespace" >/dev/null || {
  echo "namespace $namespace not found: apply kustomize/overlays/local first" >&2
  exit 1
}

pids=()
cleanup() {
  if ((${#pids[@]})); then
    kill "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT INT TERM

for forward in "${forwards[@]}"; do
  read -r service ports <<<"$forward"
  # Each forward restarts when its pod is replaced (a rollout ends the connection).
  (
    while true; do
      # shellcheck disable=SC2086  # $ports is a list of port pairs
      kubectl port-forward --address 127.0.0.1 -n "$namespace" "service/$service" $ports \
        || true
      sleep 2
    done
  ) &
  pids+=("$!")
  echo "service/$service: 127.0.0.1 local:remote $ports"
done

echo "Web UI: http://127.0.0.1:8080  MLflow: http://127.0.0.1:5000"
echo "Triton: http://127.0.0.1:8000  MinIO console: http://127.0.0.1:9001"
wait
