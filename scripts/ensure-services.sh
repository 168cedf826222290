#!/bin/sh
# ensure-services.sh makes sure the services the test suite talks to are
# installed and running on this machine: RabbitMQ on 127.0.0.1:5672 (AMQP
# bridge tests) and Mosquitto on 127.0.0.1:1883 (MQTT bridge tests), and
# Debian's chromium at /usr/bin/chromium (the console test). It installs
# from Debian's packages when one is missing and starts a service when it
# is stopped; it never touches one that is up.
set -eu

# probe reports whether something listens on 127.0.0.1:$1 (bash's /dev/tcp,
# else nc).
probe() {
	if command -v bash >/dev/null 2>&1; then
		bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
	elif command -v nc >/dev/null 2>&1; then
		nc -z 127.0.0.1 "$1" 2>/dev/null
	else
		return 1
	fi
}

wait_port() { # port seconds
	i=0
	while [ "$i" -lt "$2" ]; do
		probe "$1" && return 0
		sleep 1
		i=$((i + 1))
	done
	return 1
}

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd="sudo"

if probe 5672; then
	echo "ensure-services: RabbitMQ is up on 127.0.0.1:5672"
else
	if ! command -v rabbitmq-server >/dev/null 2>&1; then
		echo "ensure-services: installing rabbitmq-server from Debian's packages"
		$sudo_cmd apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq rabbitmq-server >/dev/null
	fi
	echo "ensure-services: starting RabbitMQ"
	$sudo_cmd rabbitmq-server -detached >/dev/null 2>&1 || true
	if ! wait_port 5672 90; then
		echo "ensure-services: RabbitMQ did not come up on 127.0.0.1:5672 within 90 s;" >&2
		echo "  start it by hand (rabbitmq-server -detached) and look at /var/log/rabbitmq/" >&2
		exit 1
	fi
	echo "ensure-services: RabbitMQ is up on 127.0.0.1:5672"
fi

if probe 1883; then
	echo "ensure-services: an MQTT broker is up on 127.0.0.1:1883"
else
	if ! command -v mosquitto >/dev/null 2>&1; then
		echo "ensure-services: installing mosquitto from Debian's packages"
		$sudo_cmd apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq mosquitto >/dev/null
	fi
	echo "ensure-services: starting Mosquitto on 127.0.0.1:1883"
	conf=/etc/mosquitto/mosquitto.conf
	if ! grep -q "^listener 1883" "$conf" 2>/dev/null; then
		# Debian's default listens on localhost only and refuses anonymous
		# clients since 2.0; the tests need an anonymous loopback listener.
		conf=$(mktemp)
		printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' >"$conf"
	fi
	$sudo_cmd mosquitto -d -c "$conf" >/dev/null 2>&1 || true
	if ! wait_port 1883 30; then
		echo "ensure-services: Mosquitto did not come up on 127.0.0.1:1883 within 30 s;" >&2
		echo "  start it by hand (mosquitto -d -c /etc/mosquitto/mosquitto.conf)" >&2
		exit 1
	fi
	echo "ensure-services: Mosquitto is up on 127.0.0.1:1883"
fi

# Chromium for the console test (broker: TestConsoleInChromium), which
# fails rather than installs when it is missing.
if [ -x /usr/bin/chromium ]; then
	echo "ensure-services: chromium is installed (/usr/bin/chromium)"
else
	echo "ensure-services: installing chromium from Debian's packages"
	$sudo_cmd apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
	if [ ! -x /usr/bin/chromium ]; then
		echo "ensure-services: chromium did not install to /usr/bin/chromium; install it by hand (apt-get install chromium)" >&2
		exit 1
	fi
	echo "ensure-services: chromium is installed (/usr/bin/chromium)"
fi
