#!/usr/bin/env bash
# The docker-compose cluster behind ./start.sh --compose, ./stop.sh --compose, ... (compose/README.md)
#
#   compose/compose.sh start [--input CSV] [--retrain] [--refresh] [--rows N]
#   compose/compose.sh stop | restart [start options] | status | reset [--yes]
#
# Environment: SPARKMAKER_COMPOSE_ENV_FILE (default <repo>/.env), SPARKMAKER_COMPOSE_KEY_FILE
# (default <repo>/.state/compose/api-key), SPARKMAKER_COMPOSE_TIMEOUT (seconds to wait for
# health, default 900), SPARKMAKER_ENGINE_UP (a script that starts a Docker-compatible engine
# and prints its environment, default ../shared/containers/engine-up.sh when it exists).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

env_file="${SPARKMAKER_COMPOSE_ENV_FILE:-$root/.env}"
key_file="${SPARKMAKER_COMPOSE_KEY_FILE:-$root/.state/compose/api-key}"
timeout="${SPARKMAKER_COMPOSE_TIMEOUT:-900}"
log_dir="$(dirname "$key_file")"
long_running=(postgres redis moto spark-master spark-worker-1 spark-worker-2 metastore mlflow thrift-server model-server api jupyter airflow)
one_shots=(features training publish)

say() { printf '%s\n' "$*"; }
die() { printf 'sparkmaker: error: %s\n' "$*" >&2; exit 2; }

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# --- the engine --------------------------------------------------------------------------
ensure_engine() {
  if ! command -v docker-compose >/dev/null 2>&1 || ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    local engine_up="${SPARKMAKER_ENGINE_UP:-$root/../shared/containers/engine-up.sh}"
    if [ -x "$engine_up" ]; then
      local engine_env
      engine_env="$("$engine_up" --env)" || die "the container engine did not start: read the output of $engine_up above"
      eval "$engine_env"
    fi
  fi
  command -v docker-compose >/dev/null 2>&1 \
    || die "docker-compose (1.29 or later) is not installed: install it (Debian: apt-get install docker-compose) and a Docker engine"
  docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
    || die "no Docker engine answers${DOCKER_HOST:+ at $DOCKER_HOST}: start Docker (or a compatible engine) and retry"
}

dc() { docker-compose --project-directory "$root" -f "$root/docker-compose.yml" --env-file "$env_file" "$@"; }

# A setting of the compose file: the environment wins over the env file, as docker-compose does.
conf() {
  local name="$1" default="${2:-}"
  if [ -n "${!name:-}" ]; then printf '%s' "${!name}"; return; fi
  local line
  line="$(grep -E "^[[:space:]]*$name=" "$env_file" 2>/dev/null | tail -n 1 || true)"
  line="${line#*=}"; line="${line%\"}"; line="${line#\"}"
  printf '%s' "${line:-$default}"
}

random_token() { head -c 32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }
sha256() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# A first start creates the env file from .env.example with fresh secrets; the API key itself
# goes to the key file (0600) and only its sha256 into the env file.
ensure_env_file() {
  if [ -f "$env_file" ]; then
    # An env file from before the SQL server or MLflow asked for a password: give it one.
    local secret
    for secret in SQL_PASSWORD MLFLOW_PASSWORD; do
      if ! grep -q "^$secret=." "$env_file"; then
        sed -i "/^$secret=/d" "$env_file"
        (umask 077; printf '%s=%s\n' "$secret" "$(random_token)" >> "$env_file")
        say "added a new $secret to $env_file"
      fi
    done
    return
  fi
  [ -f "$root/.env.example" ] || die "$root/.env.example is missing: restore it from git"
  mkdir -p "$(dirname "$key_file")"
  local key; key="smk_$(random_token)"
  (umask 077; printf '%s\n' "$key" > "$key_file")
  (umask 077; sed -e "s|^POSTGRES_PASSWORD=.*|POSTGRES_PASSWORD=$(random_token)|" \
                  -e "s|^JUPYTER_TOKEN=.*|JUPYTER_TOKEN=$(random_token)|" \
                  -e "s|^SQL_PASSWORD=.*|SQL_PASSWORD=$(random_token)|" \
                  -e "s|^MLFLOW_PASSWORD=.*|MLFLOW_PASSWORD=$(random_token)|" \
                  -e "s|^API_KEY_HASH=.*|API_KEY_HASH=$(sha256 "$key")|" "$root/.env.example" > "$env_file")
  say "created $env_file with new secrets (the API key is in $key_file)"
}

container_of() { dc ps -q "$1" 2>/dev/null | head -n 1; }

# The host ports of the published services, each checked unless our own container holds it.
check_ports() {
  local spec service variable default port
  for spec in "api API_PORT 8000" "jupyter JUPYTER_PORT 8888" "spark-master SPARK_UI_PORT 8080" "thrift-server THRIFT_PORT 10000" "mlflow MLFLOW_PORT 5000" "airflow AIRFLOW_PORT 8090"; do
    read -r service variable default <<< "$spec"
    port="$(conf "$variable" "$default")"
    local id; id="$(container_of "$service")"
    if [ -n "$id" ] && [ "$(docker inspect -f '{{.State.Running}}' "$id" 2>/dev/null)" = "true" ]; then
      continue
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port for $service is taken by another program: stop it or set $variable in $env_file"
    fi
  done
}

# --- failures: the stage's own last words ------------------------------------------------
explain_failure() {
  local service id state code
  for service in "${one_shots[@]}" "${long_running[@]}"; do
    id="$(container_of "$service")"
    [ -n "$id" ] || continue
    read -r state code < <(docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' "$id" 2>/dev/null || echo "unknown 0")
    if { [ "$state" = "exited" ] && [ "$code" != "0" ]; } || [ "$(health_of "$id")" = "unhealthy" ]; then
      local last
      # `|| true`: a log without an error line (a service that is only slow) must not end this
      # script silently under pipefail; its last line is said instead.
      last="$(dc logs --no-color --tail 40 "$service" 2>/dev/null | grep -iE 'error|exception|failed' | grep -v 'its own message is above' | tail -n 1 | sed 's/^[^|]*| //' || true)"
      [ -n "$last" ] || last="$(dc logs --no-color --tail 1 "$service" 2>/dev/null | sed 's/^[^|]*| //' || true)"
      die "$service ${state/exited/exited with code $code}: ${last:-no output} (full log: compose/compose.sh logs $service)"
    fi
  done
}

health_of() { docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$1" 2>/dev/null || echo missing; }

wait_healthy() {
  local deadline=$(( SECONDS + timeout )) service id pending
  while :; do
    pending=()
    for service in "${long_running[@]}"; do
      id="$(container_of "$service")"
      case "$( [ -n "$id" ] && health_of "$id" || echo missing)" in
        healthy) ;;
        unhealthy) explain_failure; die "$service is unhealthy: compose/compose.sh logs $service" ;;
        *) pending+=("$service") ;;
      esac
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    [ $SECONDS -lt $deadline ] || die "not healthy after ${timeout} s: ${pending[*]} (compose/compose.sh logs ${pending[0]})"
    sleep 2
  done
}

# --- commands ----------------------------------------------------------------------------
start() {
  local input="" rows="" retrain=no refresh=no
  while [ $# -gt 0 ]; do
    case "$1" in
      --input) [ $# -ge 2 ] || die "--input needs a CSV file"; input="$2"; shift 2 ;;
      --rows) [ $# -ge 2 ] || die "--rows needs a number"; rows="$2"; shift 2 ;;
      --retrain) retrain=yes; shift ;;
      --refresh) refresh=yes; shift ;;
      -h|--help) usage; exit 0 ;;
      *) die "unknown option $1 for start (see: compose/compose.sh --help)" ;;
    esac
  done
  if [ -n "$input" ]; then
    [ -f "$input" ] || die "--input $input is not a file"
    export INPUT_DIR; INPUT_DIR="$(cd "$(dirname "$input")" && pwd)"
    export INPUT_FILE; INPUT_FILE="$(basename "$input")"
  fi
  if [ -n "$rows" ]; then
    [[ "$rows" =~ ^[1-9][0-9]*$ ]] || die "--rows $rows is not a positive number"
    export SAMPLE_ROWS="$rows"
  fi
  export RETRAIN="$retrain" REFRESH="$refresh"

  ensure_engine
  ensure_env_file
  check_ports
  mkdir -p "$log_dir"
  local build_log="$log_dir/build.log"
  say "sparkmaker: building the images (the first time takes several minutes; log: $build_log) ..."
  local started=$SECONDS
  if ! dc build > "$build_log" 2>&1; then
    tail -n 15 "$build_log" >&2
    die "building the images failed: read $build_log"
  fi
  say "  images: ready in $(( SECONDS - started )) s"
  say "sparkmaker: starting the cluster (features, training and publishing run first) ..."
  started=$SECONDS
  local rc=0
  dc up -d --remove-orphans 2>&1 | tee "$log_dir/up.log" | sed -u 's/^/  /' || rc=$?
  if [ "$rc" != "0" ]; then
    explain_failure
    die "docker-compose up failed: read $log_dir/up.log"
  fi
  wait_healthy
  explain_failure   # a one-shot that failed though up went on
  say "  cluster: healthy in $(( SECONDS - started )) s"
  print_addresses
}

print_addresses() {
  local api_port jupyter_port ui_port thrift_port key hash customer
  api_port="$(conf API_PORT 8000)"; jupyter_port="$(conf JUPYTER_PORT 8888)"
  ui_port="$(conf SPARK_UI_PORT 8080)"; thrift_port="$(conf THRIFT_PORT 10000)"
  hash="$(conf API_KEY_HASH)"
  key=""
  if [ -f "$key_file" ] && [ "$(sha256 "$(tr -d '\n' < "$key_file")")" = "$hash" ]; then key="$(tr -d '\n' < "$key_file")"; fi
  customer="$(dc exec -T thrift-server python3 -c '
from configuration.settings import load_settings
from features import lake
import pyarrow.parquet as pq
manifest = lake.read_manifest(load_settings())
print(pq.read_table(manifest["outputs"]["latest"]["uri"], columns=["id"]).column("id")[0].as_py())' 2>/dev/null | tail -n 1 || true)"
  say ""
  say "API: http://127.0.0.1:$api_port"
  say "JupyterLab: http://127.0.0.1:$jupyter_port/lab?token=$(conf JUPYTER_TOKEN)"
  say "Spark master UI: http://127.0.0.1:$ui_port"
  say "SQL (HiveServer2): jdbc:hive2://127.0.0.1:$thrift_port/credit_risk"
  say "MLflow: http://127.0.0.1:$(conf MLFLOW_PORT 5000)  (user admin, password: MLFLOW_PASSWORD in $env_file)"
  say "Airflow: http://127.0.0.1:$(conf AIRFLOW_PORT 8090)  (user admin, password: docker-compose exec airflow cat /lake/.state/airflow/passwords.json; DAG credit_risk_lifecycle)"
  say "SQL user: sparkmaker  password: $(conf SQL_PASSWORD)  (SQL_PASSWORD in $env_file)"
  if [ -n "$key" ]; then
    say "API key: $key"
  else
    say "API key: the key whose sha256 is API_KEY_HASH in $env_file"
    key="YOUR_KEY"
  fi
  say "Try: curl -H \"Authorization: Bearer $key\" http://127.0.0.1:$api_port/predict/${customer:-CUSTOMER_ID}"
  say "SQL: .venv/lib/python3.11/site-packages/pyspark/bin/beeline -u jdbc:hive2://127.0.0.1:$thrift_port/credit_risk -e 'SELECT * FROM latest_features LIMIT 5'"
  say "Services: compose/compose.sh status   Logs: compose/compose.sh logs SERVICE   Stop: ./stop.sh --compose"
}

stop() {
  ensure_engine
  [ -f "$env_file" ] || { say "sparkmaker: no $env_file, so no cluster to stop"; return 0; }
  # Java services and the API get time to finish; the engine would otherwise kill at once.
  dc stop --timeout "${SPARKMAKER_COMPOSE_STOP_TIMEOUT:-30}" 2>&1 | sed 's/^/  /'
  say "sparkmaker: cluster stopped (state kept in its volumes; ./start.sh --compose starts it again)"
}

status() {
  ensure_engine
  [ -f "$env_file" ] || { say "sparkmaker: no $env_file, so no cluster"; return 0; }
  dc ps
}

reset() {
  local yes=no
  case "${1:-}" in --yes|-y) yes=yes ;; "") ;; *) die "unknown option $1 for reset (only --yes)" ;; esac
  ensure_engine
  [ -f "$env_file" ] || { say "sparkmaker: no $env_file, so no cluster to reset"; return 0; }
  local project; project="$(conf COMPOSE_PROJECT_NAME sparkmaker)"
  if [ "$yes" != yes ]; then
    [ -t 0 ] || die "reset deletes the cluster's containers and volumes (lake, metastore database, registry, stores) of project $project: confirm with ./reset.sh --compose --yes"
    read -r -p "Delete the containers and volumes (lake, metastore database, registry, stores) of project $project? [y/N] " answer
    case "$answer" in y|Y|yes|YES) ;; *) say "reset cancelled: nothing deleted"; return 1 ;; esac
  fi
  dc down -v --remove-orphans --timeout "${SPARKMAKER_COMPOSE_STOP_TIMEOUT:-30}" 2>&1 | sed 's/^/  /'
  say "sparkmaker: deleted the containers and volumes of project $project ($env_file and the API key are kept)"
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  start) start "$@" ;;
  stop) stop ;;
  restart) stop; start "$@" ;;
  status) status ;;
  reset) reset "$@" ;;
  logs) ensure_engine; dc logs --no-color --tail "${SPARKMAKER_COMPOSE_LOG_LINES:-200}" "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; die "unknown command '${command}': start, stop, restart, status, reset or logs" ;;
esac
