#!/usr/bin/env bash
# Used by the workflows: install the project from uv.lock (`make setup`, into .venv, which later steps find first
# on their PATH), then the default DVC remote's plugin and its credentials from
# repository secrets (Settings > Secrets and variables > Actions) passed in as environment variables; an unset
# secret is an empty string, which the remote types that do not use it ignore.
#   s3://  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials)
#   gs://  GCP_SERVICE_ACCOUNT_JSON: a service-account key (JSON), written to a file for
#          GOOGLE_APPLICATION_CREDENTIALS
#   ssh:// DVC_SSH_PRIVATE_KEY: a private key, given to the remote with `dvc remote modify --local ... keyfile`
# Then bounds the time a dead or unreachable remote can take (below) and checks the remote with
# `fmnist remote check`, which stops the step with one line naming the remote and what to fix.
# Writes the remote's name and URL (empty without a default remote) to the step's outputs.
#   .github/dvc-remote.sh [--no-install]   --no-install: the project and the plugin are installed already (tests)
set -euo pipefail
# Outside GitHub Actions (by hand, docs/remotes.md): no step outputs or exports to write, the key file in $TMPDIR
: "${GITHUB_OUTPUT:=/dev/null}" "${GITHUB_ENV:=/dev/null}" "${GITHUB_PATH:=/dev/null}" "${RUNNER_TEMP:=${TMPDIR:-/tmp}}"
do_install=1
if [ "${1:-}" = "--no-install" ]; then do_install=0; fi
if [ "$do_install" = 1 ]; then
  make setup SKIP_DATA=1 EXTRAS=
  export PATH="$PWD/.venv/bin:$PATH"
  echo "$PWD/.venv/bin" >> "$GITHUB_PATH"
fi
config="$(dvc config --list)"  # every level (.dvc/config, then config.local): one DVC start-up, not one a value
setting() { printf '%s\n' "$config" | sed -n "s/^$1=//p" | tail -n 1; }  # the last level that sets it wins
name="$(setting core.remote)"  # the default remote (`dvc remote add -d`), empty if none
url=""
if [ -n "$name" ]; then url="$(setting "remote.$name.url")"; fi
echo "DVC remote: ${name:-none} ${url}"
echo "name=$name" >> "$GITHUB_OUTPUT"
echo "url=$url" >> "$GITHUB_OUTPUT"
plugin=""
case "$url" in
  s3://*) plugin=s3 ;;
  gs://*) plugin=gs ;;
  ssh://*) plugin=ssh ;;
esac
if [ "$do_install" = 1 ] && [ -n "$plugin" ]; then  # the plugin at its locked version, beside the project
  UV_PROJECT_ENVIRONMENT=.venv .venv/bin/uv sync --locked --quiet --extra "$plugin"
fi
if [ -n "${GCP_SERVICE_ACCOUNT_JSON:-}" ]; then
  printf '%s' "$GCP_SERVICE_ACCOUNT_JSON" > "$RUNNER_TEMP/gcp.json"
  echo "GOOGLE_APPLICATION_CREDENTIALS=$RUNNER_TEMP/gcp.json" >> "$GITHUB_ENV"
fi
if [ -n "${DVC_SSH_PRIVATE_KEY:-}" ] && [ -n "$name" ]; then
  install -m 600 /dev/null "$RUNNER_TEMP/dvc_ssh_key"
  printf '%s\n' "$DVC_SSH_PRIVATE_KEY" > "$RUNNER_TEMP/dvc_ssh_key"
  dvc remote modify --local "$name" keyfile "$RUNNER_TEMP/dvc_ssh_key"
fi
[ -n "$name" ] || exit 0

# Bounded waits, unless .dvc/config sets its own. By default a remote that does not answer holds a job for long:
# botocore waits up to 60 s to connect and 60 s for each read, in 5 attempts, s3fs repeats timed-out reads 5
# times around those (25 minutes and more), and dvc-ssh waits 1800 s to connect. A connection takes
# milliseconds when the remote is up.
case "$url" in
  s3://*)
    limits=(--set-default connect_timeout=5 --set-default read_timeout=60)
    # botocore's attempts per request (s3fs still retries throttling and dropped reads 5 times around them)
    if [ -z "${AWS_MAX_ATTEMPTS:-}" ]; then
      echo "AWS_MAX_ATTEMPTS=2" >> "$GITHUB_ENV"
      export AWS_MAX_ATTEMPTS=2
    fi
    ;;
  ssh://*) limits=(--set-default timeout=20) ;;
  *) limits=() ;;
esac
# Writes those limits to .dvc/config.local where no config sets them, then checks the remote: on failure, one
# line naming the remote, the problem and what to fix, and this step fails.
fmnist remote check "${limits[@]}" "$name"
