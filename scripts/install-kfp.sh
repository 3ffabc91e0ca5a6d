#!/usr/bin/env bash
# Install Kubeflow Pipelines standalone into the current kubectl context.
#
# The server release is pinned to the one whose pipeline-spec and kfp-kubernetes protos
# match the SDK that compiles our pipeline (`kfp`, `kfp-kubernetes` in pyproject.toml):
# an older server refuses fields the newer SDK writes into every task. The suite parses
# the compiled pipeline with this release's protos and fails when the two drift apart.
set -euo pipefail

PIPELINE_VERSION=2.17.3
manifests="github.com/kubeflow/pipelines/manifests/kustomize"

command -v kubectl >/dev/null || { echo "kubectl not found on PATH" >&2; exit 1; }
kubectl apply -k "${manifests}/cluster-scoped-resources?ref=${PIPELINE_VERSION}"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "${manifests}/env/platform-agnostic?ref=${PIPELINE_VERSION}"
kubectl -n kubeflow wait --for=condition=Available --timeout=900s deployment --all
echo "Kubeflow Pipelines ${PIPELINE_VERSION} is up in namespace kubeflow"
