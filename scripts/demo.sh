#!/usr/bin/env bash
# Deploy the demo stack to moto server on 127.0.0.1:5000 with a local file
# state backend, then tear it down again. Needs the Pulumi CLI.
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p .popstack/state
export PULUMI_BACKEND_URL="file://$PWD/.popstack/state"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE:-popstack-demo}"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:5000 AWS_EC2_METADATA_DISABLED=true

.venv/bin/moto_server -H 127.0.0.1 -p 5000 >.popstack/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
# moto runs Lambda functions in Docker by default, and there is no Docker here.
# Its Docker-free backend returns a stub result instead of running the
# rotation Lambda that Secrets Manager tests when rotation is set up.
.venv/bin/python - <<'PY'
import json, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen("http://127.0.0.1:5000/moto-api/", timeout=1)
        break
    except OSError:
        time.sleep(0.2)
request = urllib.request.Request(
    "http://127.0.0.1:5000/moto-api/config",
    data=json.dumps({"lambda": {"use_docker": False}}).encode(),
    headers={"Content-Type": "application/json"},
)
urllib.request.urlopen(request, timeout=5)
PY

pulumi stack select demo --create --non-interactive
pulumi up --stack demo --yes --non-interactive
.venv/bin/popstack teardown demo --yes --force-reason "demo stack: no real orders or settlements"
