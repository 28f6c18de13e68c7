#!/bin/bash
# The image's HEALTHCHECK: GET /healthz on the admin listener ($SWITCHYARD_ADMIN,
# default 127.0.0.1:9901), healthy only on "200". switchyard answers 503 once
# SIGTERM came, so a stopping container turns unhealthy. The image has no curl:
# bash's /dev/tcp does the connect. Exit 0 healthy, 1 not (the reason on stdout).
addr=${SWITCHYARD_ADMIN:-127.0.0.1:9901}
host=${addr%:*} port=${addr##*:}
host=${host#[} host=${host%]}
if ! { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null; then
	echo "unhealthy: cannot connect to the admin listener $addr"
	exit 1
fi
printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
if ! IFS=' ' read -r -t 2 version status _ <&3; then
	echo "unhealthy: no answer from $addr"
	exit 1
fi
status=${status%$'\r'}
if [ "$status" != 200 ]; then
	echo "unhealthy: /healthz answered $status"
	exit 1
fi
echo ok
