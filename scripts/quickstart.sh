#!/usr/bin/env bash
# Set everything up and run the main job on the sample event: the offline plan
# and policy check of the Lisbon pop-up. With the Pulumi CLI on PATH, also
# deploy the demo stack to a local moto server with `pulumi up` and destroy it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
.venv/bin/popstack plan lisbon-popup

if ! command -v pulumi >/dev/null 2>&1; then
  echo "quickstart: the Pulumi CLI is not on PATH, so the demo deploy is skipped" \
       "(install it as described at https://www.pulumi.com/docs/install/); the offline plan above ran in full."
  exit 0
fi
bash scripts/demo.sh
