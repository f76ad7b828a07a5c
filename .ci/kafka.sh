# Kafka-compatible broker for the test run (SERVICES.md): tansu 0.6.0 with SQLite storage.
# Sourced by .ci/run (bash, `set -euo pipefail`), not executed. It
#   - installs tansu into ~/.cache/tansu-0.6.0-libsql unless the binary is already there
#     (~4-5 minutes cold),
#   - starts one broker on a free 127.0.0.1 port in a temporary directory, in the background,
#   - waits until the port accepts connections (its log is printed if it does not),
#   - exports STUDIO_TEST_KAFKA_BROKERS=127.0.0.1:PORT for the tests
#     (ingest::kafka::testkit uses it instead of starting its own broker),
#   - defines kafka_cleanup, which stops the broker and removes its directory; call it from
#     the EXIT trap.
# tansu creates no topic by itself and its DeleteTopics deletes every topic: tests create their
# own uniquely named topics and never delete any.

kafka_tansu_root="$HOME/.cache/tansu-0.6.0-libsql"
kafka_tansu="$kafka_tansu_root/bin/tansu"
if [ ! -x "$kafka_tansu" ]; then
  printf '\n== %s ==\n' "installing tansu 0.6.0 into $kafka_tansu_root"
  CARGO_PROFILE_DEV_DEBUG=0 cargo install tansu --version 0.6.0 --locked --debug \
    --no-default-features --features libsql --root "$kafka_tansu_root"
fi

kafka_dir=$(mktemp -d /tmp/studio-ci-tansu.XXXXXX)
kafka_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# tansu also reads LISTENER_URL, ADVERTISED_LISTENER_URL and STORAGE_ENGINE from the
# environment; the flags below win, but clear them so nothing surprising leaks in.
(
  cd "$kafka_dir" &&
    exec env -u LISTENER_URL -u ADVERTISED_LISTENER_URL -u STORAGE_ENGINE "$kafka_tansu" broker \
      --listener-url "tcp://127.0.0.1:$kafka_port" \
      --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
      --storage-engine sqlite://tansu.db
) >"$kafka_dir/log" 2>&1 &
kafka_pid=$!

kafka_cleanup() {
  kill "$kafka_pid" >/dev/null 2>&1 || true
  for _ in $(seq 1 50); do kill -0 "$kafka_pid" >/dev/null 2>&1 || break; sleep 0.1; done
  kill -9 "$kafka_pid" >/dev/null 2>&1 || true
  rm -rf "$kafka_dir"
}

kafka_ready=""
for _ in $(seq 1 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null; then kafka_ready=1; break; fi
  kill -0 "$kafka_pid" >/dev/null 2>&1 || break
  sleep 0.1
done
if [ -z "$kafka_ready" ]; then
  echo "tansu did not accept connections on 127.0.0.1:$kafka_port within 30 s; its log:" >&2
  cat "$kafka_dir/log" >&2
  kafka_cleanup
  exit 1
fi
export STUDIO_TEST_KAFKA_BROKERS="127.0.0.1:$kafka_port"
printf '\n== %s ==\n' "tansu on $STUDIO_TEST_KAFKA_BROKERS"
