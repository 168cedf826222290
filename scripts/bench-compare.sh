#!/usr/bin/env bash
# bench-compare.sh runs the same `mote bench` scenarios against Mote (every
# feature on: users file + ACL, a declared queue, a webhook bridge, fsync
# always), plain mochi-mqtt v2.7.9 (its cmd, defaults) and a fresh Mosquitto,
# each started here on free loopback ports (never 1883), prints a table with
# the ratios Mote/Mosquitto and Mote/mochi and writes it to
# docs/bench-compare.md with the machine and the command lines.
#
# Every broker is started fresh for every run (fresh data directory for
# Mote), so one run's leftovers (or a stalled mochi) cannot affect the next;
# brokers run one at a time, interleaved scenario by scenario, and the
# message scenarios run ROUNDS times: the table takes each broker's best
# round (highest throughput, lowest p99), because on a shared machine noise
# only ever makes a run slower.
#
#   scripts/bench-compare.sh                 # full run, ~8 minutes on 2 cores
#   ROUNDS=1 DURATION=3s CONNS=2000 scripts/bench-compare.sh   # quick look
#   OUT=/tmp/x.md KEEP=/tmp/runs scripts/bench-compare.sh
#   PPROF=1 ...   Mote also serves net/http/pprof on 127.0.0.1:$PPROF_PORT
#
# Needs: go, mosquitto (Debian: apt-get install mosquitto), jq.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DURATION=${DURATION:-5s}   # publishing time per message scenario
DRAIN=${DRAIN:-3s}         # wait for acks and deliveries afterwards
ROUNDS=${ROUNDS:-2}        # message scenarios run this many times; the best counts
CONNS=${CONNS:-10000}      # idle connections
HOLD=${HOLD:-10s}          # how long they are held
RATE=${RATE:-5000}         # latency scenario pace, msg/s
OUT=${OUT:-docs/bench-compare.md}
BROKERS=${BROKERS:-"mote mochi mosquitto"}

for tool in go mosquitto jq; do
	command -v "$tool" >/dev/null || { echo "bench-compare: $tool not found (Debian: apt-get install ${tool/go/golang})" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/bench-compare.XXXXXX)
RES=${KEEP:-$WORK/results}
mkdir -p "$RES"
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			# bounded: SIGKILL after 5 s
			for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -9 "$pid" 2>/dev/null || true
		fi
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s bench-compare: %s\n' "$(date +%T)" "$*" >&2; }

# free_port prints a loopback port nobody listens on, below the ephemeral
# range (so no client connection holds it) and never 1883. Racy by nature:
# start retries with other ports when a broker cannot bind.
read -r EPHEMERAL_LO _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || EPHEMERAL_LO=32768
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((10000 + RANDOM % (EPHEMERAL_LO - 10000)))
		[ "$p" = 1883 ] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	echo "bench-compare: no free port found" >&2
	exit 1
}

# wait_port PORT PID: until something accepts on PORT (10 s), or PID died.
wait_port() {
	for _ in $(seq 100); do
		kill -0 "$2" 2>/dev/null || return 1
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	return 1
}

log "building bin/mote and bin/mochi"
mkdir -p bin
CGO_ENABLED=0 go build -trimpath -o bin/mote ./cmd/mote
go build -trimpath -o bin/mochi github.com/mochi-mqtt/server/v2/cmd
MOTE=$ROOT/bin/mote

# Mote's configuration: every feature on.
BENCH_USER=bench
BENCH_PW=bench-$RANDOM$RANDOM
SINK_PORT=$(free_port)
printf '%s\n' "$BENCH_PW" | "$MOTE" passwd --password-stdin "$WORK/passwd" "$BENCH_USER" >/dev/null
cat >"$WORK/acl" <<EOF
allow user $BENCH_USER all mote-bench/#
allow user $BENCH_USER all bench-hook/#
deny  any              all #
EOF
cat >"$WORK/mote.yaml" <<EOF
fsync: always
log:
  level: warn
auth:
  allow_anonymous: false
  users_file: $WORK/passwd
  acl_file: $WORK/acl
queues:
  - name: bench
    filter: mote-bench/+/queue
bridges:
  - name: hook
    type: http
    filters: ["bench-hook/#"]          # only the webhook scenario's topic
    url: "http://127.0.0.1:$SINK_PORT/"
    body: json
    concurrency: 4
    ordered: false
    batch_size: 100
    batch_wait: 5ms
EOF
"$MOTE" serve --check-config "$WORK/mote.yaml" >/dev/null

BROKER_PID=
BROKER_URL=
# start BROKER: starts a fresh broker, sets BROKER_PID and BROKER_URL;
# tries other ports if one was taken meanwhile.
start() {
	local try
	for try in 1 2 3; do
		start_once "$1" && return 0
		echo "bench-compare: $1 did not start on $BROKER_URL (try $try); its log:" >&2
		tail -5 "$WORK/$1.log" >&2
		stop
	done
	exit 1
}

start_once() {
	local port ws http
	port=$(free_port)
	case $1 in
	mote)
		ws=$(free_port) http=$(free_port)
		rm -rf "$WORK/data"
		local extra=()
		[ -n "${PPROF:-}" ] && extra=(--pprof "127.0.0.1:${PPROF_PORT:-6060}")
		"$MOTE" serve --config "$WORK/mote.yaml" --data-dir "$WORK/data" --mqtt "127.0.0.1:$port" \
			--ws "127.0.0.1:$ws" --http "127.0.0.1:$http" "${extra[@]}" 2>>"$WORK/mote.log" &
		;;
	mochi)
		ws=$(free_port) http=$(free_port)
		"$ROOT/bin/mochi" -tcp "127.0.0.1:$port" -ws "127.0.0.1:$ws" -info "127.0.0.1:$http" >>"$WORK/mochi.log" 2>&1 &
		;;
	mosquitto)
		cat >"$WORK/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
EOF
		mosquitto -c "$WORK/mosquitto.conf" 2>>"$WORK/mosquitto.log" &
		;;
	esac
	BROKER_PID=$!
	PIDS+=("$BROKER_PID")
	BROKER_URL=mqtt://127.0.0.1:$port
	wait_port "$port" "$BROKER_PID"
}

stop() {
	kill "$BROKER_PID" 2>/dev/null || true
	for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$BROKER_PID" 2>/dev/null || true
	wait "$BROKER_PID" 2>/dev/null || true
}

# run NAME BROKER ARGS...: one `mote bench` run against a fresh BROKER;
# the JSON result goes to $RES/BROKER-NAME.json with the command line added.
# --pid makes the generator report the broker's CPU beside its own over the
# measured window (is the generator the bottleneck?) and, for conns, the
# broker's memory.
run() {
	local name=$1 broker=$2
	shift 2
	local auth=()
	[ "$broker" = mote ] && auth=(--username "$BENCH_USER" --password "$BENCH_PW")
	start "$broker"
	local out=$RES/$broker-$name.json
	"$MOTE" bench "$@" --url "$BROKER_URL" "${auth[@]}" --pid "$BROKER_PID" --json >"$WORK/out" 2>"$WORK/err" || true
	stop
	local line
	line=$(grep '^{' "$WORK/out" | tail -1 || true)
	[ -n "$line" ] || line="{\"error\":$(tail -3 "$WORK/err" | jq -Rs .)}"
	jq -c --arg cmd "mote bench $* --url $BROKER_URL" '. + {cmd: $cmd}' <<<"$line" >"$out"
	log "$broker $name: $(summary "$out")"
}

summary() {
	jq -r 'if .messages then
		"\(.messages.receive_rate|floor) deliveries/s, sent \(.messages.send_rate|floor)/s, lost \(.messages.lost), p50 \(.messages.latency.p50/1e6) ms, p99 \(.messages.latency.p99/1e6) ms, cpu broker \(.messages.cpu.broker*100|floor)% gen \(.messages.cpu.generator*100|floor)%\(if .error then ", ERROR " + .error else "" end)"
	elif .conns then
		"\(.conns.connected) conns, \(.conns.bytes_per_conn/1024*10|floor/10) KiB/conn\(if .error then ", ERROR " + .error else "" end)"
	else "error: \(.error)" end' "$1"
}

START=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log "results in $RES; brokers: $BROKERS; duration $DURATION per run"

COMMON=(--duration "$DURATION" --drain "$DRAIN")
if [ -z "${REPORT_ONLY:-}" ]; then # REPORT_ONLY=1 KEEP=DIR: only rebuild the table from DIR
for b in $BROKERS; do run conns "$b" conns --conns "$CONNS" --hold "$HOLD" --duration 120s --connect-timeout 30s; done
for r in $(seq "$ROUNDS"); do
	log "round $r of $ROUNDS"
	for qos in 0 1; do
		for b in $BROKERS; do run "fanin-q$qos-r$r" "$b" pubsub --topic-mode fanin --pubs 10 --subs 1 --qos "$qos" "${COMMON[@]}"; done
		for b in $BROKERS; do run "fanout-q$qos-r$r" "$b" pubsub --topic-mode fanout --pubs 1 --subs 50 --qos "$qos" "${COMMON[@]}"; done
		for b in $BROKERS; do run "pairs-q$qos-r$r" "$b" pubsub --topic-mode pairs --pubs 20 --qos "$qos" "${COMMON[@]}"; done
	done
	for b in $BROKERS; do run "latency-r$r" "$b" latency --rate "$RATE" "${COMMON[@]}"; done
	if [[ " $BROKERS " == *" mote "* ]]; then
		run "queue-r$r" mote queue --pubs 10 --subs 4 --qos 1 "${COMMON[@]}"
		run "webhook-r$r" mote webhook --pubs 4 --qos 1 --topic bench-hook --sink "127.0.0.1:$SINK_PORT" "${COMMON[@]}"
	fi
done
fi
ELAPSED=$(($(date +%s) - START))

# ---- the table --------------------------------------------------------------

# best BROKER NAME KEY: the result file of BROKER's best round of NAME by
# KEY (a jq number; higher is better — negate for "lower is better").
best() {
	local f
	for f in "$RES/$1-$2".json "$RES/$1-$2"-r*.json; do
		[ -f "$f" ] && jq -c --arg f "$f" "{f: \$f, k: (($3) // -1e18)}" "$f"
	done | jq -rs 'max_by(.k) | .f // empty'
}
# get BROKER NAME JQ [KEY]: a number from BROKER's best round of NAME, or empty.
get() {
	local f
	f=$(best "$1" "$2" "${4:-.messages.receive_rate}")
	[ -n "$f" ] || return 0
	jq -r "($3) // empty" "$f"
}
# note BROKER NAME: what went wrong in the best round (an error, or a stall).
note() {
	local f
	f=$(best "$1" "$2" .messages.receive_rate)
	[ -n "$f" ] || return 0
	jq -r 'if .error then "⚠ " + (.error|.[0:60])
		elif (.config.qos // 0) > 0 and (.messages.unacked // 0) > 0 then "⚠ stalled: \(.messages.unacked) unacknowledged"
		else empty end' "$f"
}
fmt_rate() { [ -n "$1" ] && awk -v v="$1" 'BEGIN{ if (v>=1e4) printf "%.1fk", v/1e3; else printf "%.0f", v }'; }
fmt_ms() { [ -n "$1" ] && awk -v v="$1" 'BEGIN{ printf "%.2f", v/1e6 }'; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2f", a/b; else printf "-" }' || echo "-"; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN{ exit !(a != "-" && a+0 >= b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN{ exit !(a != "-" && a+0 <= b) }'; }

TABLE=$WORK/table.md
{
	echo "| Scenario | Mote | mochi | Mosquitto | Mote/Mosquitto | Mote/mochi | Goal | Met |"
	echo "|---|---:|---:|---:|---:|---:|---|---|"
	for qos in 0 1; do
		for s in "fanin-q$qos:fan-in 10→1 QoS $qos" "fanout-q$qos:fan-out 1→50 QoS $qos" "pairs-q$qos:20 pairs QoS $qos"; do
			key=${s%%:*} label=${s#*:}
			cells=() vals=()
			for b in mote mochi mosquitto; do
				v=$(get "$b" "$key" .messages.receive_rate)
				l=$(get "$b" "$key" .messages.lost)
				e=$(note "$b" "$key")
				vals+=("$v")
				c="$(fmt_rate "$v")"
				[ -n "$l" ] && [ "$l" != 0 ] && c="$c (lost $l)"
				[ -n "$e" ] && c="$c $e"
				cells+=("${c:--}")
			done
			rq=$(ratio "${vals[0]}" "${vals[2]}") rm=$(ratio "${vals[0]}" "${vals[1]}")
			met=missed
			ge "$rq" 1.3 && ge "$rm" 1.0 && met=met
			echo "| $label, deliveries/s | ${cells[0]} | ${cells[1]} | ${cells[2]} | $rq | $rm | ≥1.3× Mosquitto, ≥1.0× mochi | $met |"
		done
	done
	p50=() p99=()
	for b in mote mochi mosquitto; do
		p50+=("$(get "$b" latency .messages.latency.p50 '-.messages.latency.p99')")
		p99+=("$(get "$b" latency .messages.latency.p99 '-.messages.latency.p99')")
	done
	met=missed
	le "$(ratio "${p99[0]}" "${p99[2]}")" 1.0 && met=met
	echo "| latency QoS 1 at $RATE msg/s, p50 ms | $(fmt_ms "${p50[0]}") | $(fmt_ms "${p50[1]}") | $(fmt_ms "${p50[2]}") | $(ratio "${p50[0]}" "${p50[2]}") | $(ratio "${p50[0]}" "${p50[1]}") | | |"
	echo "| latency QoS 1 at $RATE msg/s, p99 ms | $(fmt_ms "${p99[0]}") | $(fmt_ms "${p99[1]}") | $(fmt_ms "${p99[2]}") | $(ratio "${p99[0]}" "${p99[2]}") | $(ratio "${p99[0]}" "${p99[1]}") | ≤ Mosquitto | $met |"
	kb=()
	for b in mote mochi mosquitto; do
		v=$(get "$b" conns .conns.bytes_per_conn)
		kb+=("$([ -n "$v" ] && awk -v v="$v" 'BEGIN{printf "%.1f", v/1024}')")
	done
	met=missed
	[ -n "${kb[0]}" ] && le "${kb[0]}" 8 && met=met
	echo "| $CONNS idle connections, KiB per connection (RSS) | ${kb[0]:--} | ${kb[1]:--} | ${kb[2]:--} | $(ratio "${kb[0]}" "${kb[2]}") | $(ratio "${kb[0]}" "${kb[1]}") | ≤ 8 KB | $met |"
	q=$(get mote queue .messages.receive_rate)
	f=$(get mote fanin-q1 .messages.receive_rate)
	rqf=$(ratio "$q" "$f")
	met=missed
	ge "$rqf" 0.5 && met=met
	echo "| queue 10 publishers → 4 consumers QoS 1, delivered msg/s (vs Mote fan-in 10→1 QoS 1: $(fmt_rate "$f")) | $(fmt_rate "$q") | | | | | ≥ 0.5× Mote fan-in: $rqf | $met |"
	w=$(get mote webhook .messages.receive_rate)
	echo "| webhook bridge, 4 publishers QoS 1, delivered msg/s (info) | $(fmt_rate "$w") | | | | | | |"
} >"$TABLE"

# CPU split per run: is the load generator the bottleneck?
CPU=$WORK/cpu.md
{
	echo "| Run | broker CPU | load generator CPU | measured window |"
	echo "|---|---:|---:|---:|"
	for f in "$RES"/*.json; do
		n=$(basename "$f" .json)
		jq -r --arg n "$n" 'select(.messages.cpu) | .messages.cpu |
			"| \($n) | \(.broker*100|floor)% | \(.generator*100|floor)% | \(.window/1e8|floor/10) s |"' "$f"
	done
} >"$CPU"

CMDS=$WORK/cmds.md
{
	for f in "$RES"/*.json; do
		jq -r '.cmd' "$f" | sed "s/--password [^ ]*/--password ***/"
	done | sed 's/127.0.0.1:[0-9]*/127.0.0.1:PORT/g' | sort -u | sed 's/^/    /'
} >"$CMDS"

cat "$TABLE"

mkdir -p "$(dirname "$OUT")"
# Hand-written analysis below this marker survives regeneration.
MARKER='<!-- analysis: kept by scripts/bench-compare.sh when it rewrites this file -->'
NOTES=
if [ -f "$OUT" ] && grep -qF "$MARKER" "$OUT"; then
	NOTES=$(sed -n "\|^$MARKER|,\$p" "$OUT")
fi
{
	echo "# Mote vs plain mochi vs Mosquitto (\`make bench-compare\`)"
	echo
	if [ -n "${REPORT_ONLY:-}" ]; then
		echo "Table rebuilt by \`scripts/bench-compare.sh\` (REPORT_ONLY) on $(date -u '+%Y-%m-%d %H:%M UTC') from the runs kept in $RES; the machine lines below describe now, not those runs."
	else
		echo "Generated by \`scripts/bench-compare.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') in ${ELAPSED}s."
	fi
	echo
	echo "| | |"
	echo "|---|---|"
	echo "| Machine | $(nproc) CPUs ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)), $(free -g | awk '/^Mem:/{print $2}') GiB RAM, $(uname -sr) |"
	echo "| Load average at start / end | $LOAD0 / $(cut -d' ' -f1-3 /proc/loadavg) |"
	echo "| Go | $(go env GOVERSION) |"
	echo "| Mote | $(git describe --tags --always --dirty 2>/dev/null || echo dev), \`fsync: always\`, users file + ACL, declared queue, webhook bridge (own topic only), HTTP admin listener |"
	echo "| mochi | github.com/mochi-mqtt/server/v2 v2.7.9 \`cmd\` (AllowHook, defaults) |"
	echo "| Mosquitto | $(mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version //p' | head -1), fresh process, \`persistence false\`, defaults otherwise |"
	echo "| Load generator | \`mote bench\` (paho.golang, MQTT 5, 64-byte payloads) on the same cores |"
	echo "| Runs | $ROUNDS rounds of $DURATION (drain $DRAIN) per message cell, best round shown; conns once; each broker freshly started per run |"
	echo
	echo "Command: \`make bench-compare\` (\`ROUNDS=$ROUNDS DURATION=$DURATION DRAIN=$DRAIN CONNS=$CONNS HOLD=$HOLD RATE=$RATE scripts/bench-compare.sh\`)"
	echo
	cat "$TABLE"
	echo
	echo "Throughput is deliveries per second received by the subscribers (fan-out: 50 per message); the"
	echo "queue row counts deliveries to the consumers too. Ratios above 1 are better for throughput and"
	echo "worse for latency and memory."
	echo
	echo "## CPU per run"
	echo
	echo "Broker and load generator CPU from the start of publishing to the end of the drain, as \`mote bench --pid\` measures it (100% = one core; this machine has $(nproc))."
	echo
	cat "$CPU"
	echo
	echo "## Commands"
	echo
	cat "$CMDS"
	if [ -n "$NOTES" ]; then
		echo
		printf '%s\n' "$NOTES"
	fi
} >"$OUT"
log "wrote $OUT (${ELAPSED}s)"
