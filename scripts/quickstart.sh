#!/usr/bin/env bash
# README's first command: the operator against its bundled vault emulator, so a newcomer sees a
# BlobBackupInstance go Ready without an Azure subscription.
#
# With a cluster in the kubeconfig (kind, k3d, AKS...): installs the CRD, runs the operator
# locally with --embedded-vault, applies deploy/examples/msblobbackup.yaml, waits for Ready the
# way `kubectl wait` does, shows it, then deletes it and shows the finalizer letting go.
# `--keep` leaves the resource and the operator running (Ctrl-C stops the operator).
# Without a reachable cluster: runs the same operator code against the in-memory Kubernetes API
# stand-in the tests use (examples/quickstart.rs) and prints the resource as it changes.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
case "${1:-}" in
  --keep) keep=true ;;
  "") ;;
  *) echo "usage: scripts/quickstart.sh [--keep]" >&2; exit 2 ;;
esac

scripts/install-tools.sh >/dev/null
export PATH="$PWD/.tools/bin:$PATH"

if ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
  echo "==> no Kubernetes cluster reachable through your kubeconfig (${KUBECONFIG:-~/.kube/config})."
  echo "    Running the operator against the in-memory Kubernetes API stand-in instead."
  echo "    (Create a cluster, e.g. 'kind create cluster', and run this again to see it in a real one.)"
  exec cargo run --quiet --example quickstart
fi

echo "==> building the operator"
cargo build --quiet --bin blob-backup-operator
bin="${CARGO_TARGET_DIR:-target}/debug/blob-backup-operator"

ns=bbo-quickstart
name=msblobbackup
log="$(mktemp -t blob-backup-operator.XXXXXX.log)"
operator_pid=""
stop_operator() {
  if [ -n "$operator_pid" ] && kill -0 "$operator_pid" 2>/dev/null; then
    kill -TERM "$operator_pid" 2>/dev/null || true
    wait "$operator_pid" 2>/dev/null || true
  fi
}
trap stop_operator EXIT

echo "==> installing the CRDs into $(kubectl config current-context)"
kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established crd/blobbackupinstances.dataprotection.blobbackup.io crd/blobrestores.dataprotection.blobbackup.io crd/backupvaultgrants.dataprotection.blobbackup.io --timeout=60s
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f -

echo "==> starting the operator with its embedded vault emulator (log: $log)"
"$bin" run --embedded-vault --watch-namespace "$ns" --metrics-addr 127.0.0.1:0 >"$log" 2>&1 &
operator_pid=$!

echo "==> applying deploy/examples/$name.yaml"
kubectl -n "$ns" apply -f "deploy/examples/$name.yaml"
kubectl -n "$ns" get bbi "$name" --watch --output-watch-events &
watch_pid=$!
if ! kubectl -n "$ns" wait --for=condition=Ready "bbi/$name" --timeout=180s; then
  kill "$watch_pid" 2>/dev/null || true
  echo "not Ready in time; the operator's log:" >&2
  tail -n 50 "$log" >&2
  exit 1
fi
kill "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true

echo "==> Ready:"
kubectl -n "$ns" get bbi -o wide
kubectl -n "$ns" describe bbi "$name" | sed -n '/^Events:/,$p'

if $keep; then
  echo "==> left running; try: kubectl -n $ns describe bbi $name; kubectl -n $ns delete bbi $name"
  echo "    Ctrl-C stops the operator (log: $log)."
  wait "$operator_pid"
  exit 0
fi

echo "==> deleting it: the finalizer holds the resource until Azure (here: the emulator) confirms"
kubectl -n "$ns" delete bbi "$name" --wait=false
kubectl -n "$ns" wait --for=delete "bbi/$name" --timeout=120s
echo "==> gone. Events:"
kubectl -n "$ns" get events --field-selector "involvedObject.name=$name" --sort-by=.lastTimestamp || true
kubectl delete namespace "$ns" --wait=false
