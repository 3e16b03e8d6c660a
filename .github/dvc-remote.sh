#!/usr/bin/env bash
# Used by the workflows: install the project, then the default DVC remote's plugin and its credentials from
# repository secrets (Settings > Secrets and variables > Actions) passed in as environment variables; an unset
# secret is an empty string, which the remote types that do not use it ignore.
#   s3://  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials)
#   gs://  GCP_SERVICE_ACCOUNT_JSON: a service-account key (JSON), written to a file for
#          GOOGLE_APPLICATION_CREDENTIALS
#   ssh:// DVC_SSH_PRIVATE_KEY: a private key, given to the remote with `dvc remote modify --local ... keyfile`
# Writes the remote's name and URL (empty without a default remote) to the step's outputs.
set -euo pipefail
python -m pip install --upgrade pip
pip install -e .
dvc remote list
name="$(dvc config core.remote || true)"  # the default remote (`dvc remote add -d`), empty if none
url=""
if [ -n "$name" ]; then url="$(dvc config "remote.$name.url")"; fi
echo "name=$name" >> "$GITHUB_OUTPUT"
echo "url=$url" >> "$GITHUB_OUTPUT"
case "$url" in
  s3://*) pip install -e ".[s3]" ;;
  gs://*) pip install -e ".[gs]" ;;
  ssh://*) pip install -e ".[ssh]" ;;
esac
if [ -n "${GCP_SERVICE_ACCOUNT_JSON:-}" ]; then
  printf '%s' "$GCP_SERVICE_ACCOUNT_JSON" > "$RUNNER_TEMP/gcp.json"
  echo "GOOGLE_APPLICATION_CREDENTIALS=$RUNNER_TEMP/gcp.json" >> "$GITHUB_ENV"
fi
if [ -n "${DVC_SSH_PRIVATE_KEY:-}" ] && [ -n "$name" ]; then
  install -m 600 /dev/null "$RUNNER_TEMP/dvc_ssh_key"
  printf '%s\n' "$DVC_SSH_PRIVATE_KEY" > "$RUNNER_TEMP/dvc_ssh_key"
  dvc remote modify --local "$name" keyfile "$RUNNER_TEMP/dvc_ssh_key"
fi
