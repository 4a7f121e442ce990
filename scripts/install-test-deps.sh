#!/bin/sh
# System packages the tests use: Debian's Chromium (the browser tests drive it with
# Playwright; no browser is downloaded), redis-server (the scale-out tests start
# their own), prometheus, which ships promtool (tests/test_deploy_prometheus.py
# starts its own on a free port), curl (the README's commands use it;
# tests/test_readme_commands.py checks that every program they name exists) and a C
# compiler (perf/loadtest.py builds its load generator, perf/loadgen.c, and
# perf/bench_alloc.py its allocation counter; both are tested).
# Installs only what is missing; needs root
# (or sudo) for apt-get. Part of the README's test command and of .ci/run.
set -eu
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v cc >/dev/null 2>&1 || missing="$missing gcc"
prom=""
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || prom="prometheus"
[ -z "$missing$prom" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-test-deps: need root to apt-get install:$missing $prom" >&2; exit 1
fi
echo "install-test-deps: installing$missing $prom" >&2
$SUDO apt-get update -qq
# shellcheck disable=SC2086
[ -z "$missing" ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
# Without the node exporter Debian recommends with it: a host-wide daemon the tests never use.
[ -z "$prom" ] || DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
    --no-install-recommends prometheus >/dev/null
