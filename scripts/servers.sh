#!/usr/bin/env bash
# Local NATS (JetStream) and Redis for people, tests and CI.
#
#   scripts/servers.sh install                 apt-get install nats-server redis-server chromium when missing
#                                              (chromium: the console's browser tests; CHROMIUM_BIN overrides its path)
#   scripts/servers.sh start [--nats-port N] [--redis-port N] [--data DIR]
#   scripts/servers.sh stop [--data DIR]
#   scripts/servers.sh status [--data DIR]     exit 0 when both run, 3 otherwise
#
# Both listen on 127.0.0.1 only and run in the background (no systemd, no daemonizing):
#   nats-server -js -sd DIR/nats            log DIR/nats.log    pid DIR/nats.pid
#   redis-server, appendonly, dir DIR/redis log DIR/redis.log   pid DIR/redis.pid
# Data survives a stop/start with the same DIR. Defaults: ports 4222 / 6379, DIR .data/
# (relative to the current directory). Environment: NATS_SERVER_BIN, REDIS_SERVER_BIN.
set -euo pipefail

NATS_PORT=4222
REDIS_PORT=6379
DATA_DIR=.data
READY_TIMEOUT_S=20
STOP_TIMEOUT_S=10

die() { echo "servers.sh: $*" >&2; exit 1; }
usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

find_bin() { # name → path, or empty
  local name=$1 override=$2
  if [[ -n $override ]]; then echo "$override"; return; fi
  command -v "$name" 2>/dev/null && return
  local d
  for d in /usr/sbin /usr/bin /usr/local/bin /usr/local/sbin; do
    if [[ -x $d/$name ]]; then echo "$d/$name"; return; fi
  done
}
nats_bin() { find_bin nats-server "${NATS_SERVER_BIN:-}"; }
redis_bin() { find_bin redis-server "${REDIS_SERVER_BIN:-}"; }

parse_args() {
  while [[ $# -gt 0 ]]; do
    case $1 in
      --nats-port) NATS_PORT=${2:?--nats-port needs a value}; shift 2 ;;
      --redis-port) REDIS_PORT=${2:?--redis-port needs a value}; shift 2 ;;
      --data) DATA_DIR=${2:?--data needs a value}; shift 2 ;;
      -h|--help) usage ;;
      *) echo "servers.sh: unknown option $1" >&2; usage ;;
    esac
  done
  [[ $NATS_PORT =~ ^[0-9]+$ ]] || die "--nats-port must be a number"
  [[ $REDIS_PORT =~ ^[0-9]+$ ]] || die "--redis-port must be a number"
  DATA_DIR=$(realpath -m -- "$DATA_DIR")
}

cmd_install() {
  local missing=()
  [[ -n $(nats_bin) ]] || missing+=(nats-server)
  [[ -n $(redis_bin) ]] || missing+=(redis-server)
  [[ -x ${CHROMIUM_BIN:-/usr/bin/chromium} ]] || missing+=(chromium)
  if [[ ${#missing[@]} -eq 0 ]]; then
    echo "nats-server, redis-server and chromium are installed"
    return
  fi
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install ${missing[*]}"
    sudo=(sudo)
  fi
  echo "installing ${missing[*]}"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
  # policy-rc.d-free containers: the packages' own service start may warn; we never use it.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  [[ -n $(nats_bin) && -n $(redis_bin) ]] || die "installation did not provide both servers"
  [[ -x ${CHROMIUM_BIN:-/usr/bin/chromium} ]] || die "installation did not provide chromium at ${CHROMIUM_BIN:-/usr/bin/chromium}"
}

alive() { # pidfile → 0 when its process runs
  local f=$1 pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

port_open() { # port → 0 when something accepts on 127.0.0.1:port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

nats_ready() { # port → 0 when the server greets with JetStream on
  local line
  line=$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    IFS= read -r -t 2 l <&3 || exit 1
    printf '%s' "$l"
  ) || return 1
  [[ $line == INFO* && $line == *'"jetstream":true'* ]]
}

redis_ready() { # port → 0 when it answers PING with PONG (not LOADING)
  local reply
  reply=$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 l <&3 || exit 1
    printf '%s' "$l"
  ) || return 1
  [[ $reply == +PONG* ]]
}

wait_ready() { # name check port pidfile log
  local name=$1 check=$2 port=$3 pidfile=$4 log=$5 i
  for ((i = 0; i < READY_TIMEOUT_S * 10; i++)); do
    if "$check" "$port"; then return 0; fi
    if ! alive "$pidfile"; then
      echo "servers.sh: $name exited; last lines of $log:" >&2
      tail -n 20 "$log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
  echo "servers.sh: $name not ready on port $port after ${READY_TIMEOUT_S}s; see $log" >&2
  exit 1
}

start_nats() {
  local pidfile=$DATA_DIR/nats.pid log=$DATA_DIR/nats.log bin
  if alive "$pidfile"; then
    echo "nats-server already running (pid $(<"$pidfile"), port $(cat "$DATA_DIR/nats.port" 2>/dev/null || echo '?'))"
    return
  fi
  port_open "$NATS_PORT" && die "port $NATS_PORT is taken by another process (use --nats-port)"
  bin=$(nats_bin)
  [[ -n $bin ]] || die "nats-server not found: run scripts/servers.sh install"
  mkdir -p "$DATA_DIR/nats"
  nohup "$bin" -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$DATA_DIR/nats" >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "$NATS_PORT" >"$DATA_DIR/nats.port"
  wait_ready nats-server nats_ready "$NATS_PORT" "$pidfile" "$log"
  echo "nats-server ready: nats://127.0.0.1:$NATS_PORT (JetStream, data $DATA_DIR/nats, pid $(<"$pidfile"))"
}

start_redis() {
  local pidfile=$DATA_DIR/redis.pid log=$DATA_DIR/redis.log bin
  if alive "$pidfile"; then
    echo "redis-server already running (pid $(<"$pidfile"), port $(cat "$DATA_DIR/redis.port" 2>/dev/null || echo '?'))"
    return
  fi
  port_open "$REDIS_PORT" && die "port $REDIS_PORT is taken by another process (use --redis-port)"
  bin=$(redis_bin)
  [[ -n $bin ]] || die "redis-server not found: run scripts/servers.sh install"
  mkdir -p "$DATA_DIR/redis"
  # Foreground process in our background: no daemonize, no systemd supervision. Persistence
  # that survives a restart: the append-only file, fsync every second, plus RDB snapshots.
  nohup "$bin" \
    --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
    --daemonize no --supervised no \
    --dir "$DATA_DIR/redis" \
    --appendonly yes --appendfsync everysec \
    --save '3600 1 300 100 60 10000' \
    --logfile '' >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "$REDIS_PORT" >"$DATA_DIR/redis.port"
  wait_ready redis-server redis_ready "$REDIS_PORT" "$pidfile" "$log"
  echo "redis-server ready: redis://127.0.0.1:$REDIS_PORT (appendonly, data $DATA_DIR/redis, pid $(<"$pidfile"))"
}

stop_one() { # name pidfile
  local name=$1 pidfile=$2 pid i
  if ! alive "$pidfile"; then
    rm -f "$pidfile"
    echo "$name not running"
    return
  fi
  pid=$(<"$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT_S * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "servers.sh: $name (pid $pid) did not stop in ${STOP_TIMEOUT_S}s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  echo "$name stopped"
}

status_one() { # name pidfile portfile → 0 when running
  local name=$1 pidfile=$2 portfile=$3
  if alive "$pidfile"; then
    echo "$name running (pid $(<"$pidfile"), 127.0.0.1:$(cat "$portfile" 2>/dev/null || echo '?'))"
    return 0
  fi
  echo "$name stopped"
  return 1
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || usage
  shift
  case $cmd in
    install) [[ $# -eq 0 ]] || usage; cmd_install ;;
    start)
      parse_args "$@"
      mkdir -p "$DATA_DIR"
      start_nats
      start_redis
      ;;
    stop)
      parse_args "$@"
      stop_one nats-server "$DATA_DIR/nats.pid"
      stop_one redis-server "$DATA_DIR/redis.pid"
      ;;
    status)
      parse_args "$@"
      local rc=0
      status_one nats-server "$DATA_DIR/nats.pid" "$DATA_DIR/nats.port" || rc=3
      status_one redis-server "$DATA_DIR/redis.pid" "$DATA_DIR/redis.port" || rc=3
      exit $rc
      ;;
    -h|--help|help) usage ;;
    *) echo "servers.sh: unknown command $cmd" >&2; usage ;;
  esac
}

main "$@"
