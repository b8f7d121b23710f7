#!/usr/bin/env bash
# Make sure the system commands the lab, tests, demo and benchmark need are installed (Debian/Ubuntu).
#
#   ensure-system-packages.sh          mosquitto, mosquitto_passwd (package mosquitto),
#                                      promtool, prometheus (package prometheus),
#                                      prometheus-alertmanager, amtool (package prometheus-alertmanager:
#                                      tests/test_alerting.py runs the shipped route end to end)
#   ensure-system-packages.sh venv     `$PYTHON -m venv` works (package python3-venv; PYTHON defaults
#                                      to python3)
#   ensure-system-packages.sh bench    what `make bench` compares against: blackbox_exporter (package
#                                      prometheus-blackbox-exporter), the Prometheus that scrapes it
#                                      (package prometheus) and the openssl command
#   ensure-system-packages.sh container  what tests/test_image.py builds and runs the image with:
#                                      dockerd and Debian's docker client (package docker.io),
#                                      debootstrap (the local base image, scripts/build-base-image.sh)
#   ensure-system-packages.sh kubectl  `kubectl kustomize` for deploy/kubernetes (package
#                                      kubernetes-client), when no kubectl is installed
#   ensure-system-packages.sh browser  the status page's real-browser test: headless chromium (package
#                                      chromium)
#   ensure-system-packages.sh brokers  brokers other than Mosquitto that the suite probes for real:
#                                      RabbitMQ with its MQTT plugins (package rabbitmq-server, whose
#                                      start script lives in /usr/lib/rabbitmq/bin) and ejabberd's
#                                      mod_mqtt (package ejabberd)
#
# Mosquitto lives in /usr/sbin, which a normal user's PATH usually lacks: sbin directories are
# checked too. Idempotent and quiet when everything is present. As root with apt-get: installs what is
# missing (one `apt-get update`, then one `apt-get install`). Otherwise: prints the command to run and
# exits 1.
set -euo pipefail

PYTHON=${PYTHON:-python3}

# "check:package" pairs; a check is a command name, an absolute path that must be executable, or "venv"
# for Python's venv/ensurepip modules.
requirements=()
if (($# == 0)); then
    set -- tools
fi
for group in "$@"; do
    case $group in
        tools)
            requirements+=(
                "mosquitto:mosquitto"
                "mosquitto_passwd:mosquitto"
                "promtool:prometheus"
                "prometheus:prometheus"
                "prometheus-alertmanager:prometheus-alertmanager"
                "amtool:prometheus-alertmanager"
            )
            ;;
        venv) requirements+=("venv:python3-venv") ;;
        brokers)
            requirements+=(
                "/usr/lib/rabbitmq/bin/rabbitmq-server:rabbitmq-server"
                "ejabberdctl:ejabberd"
            )
            ;;
        bench)
            requirements+=(
                "prometheus-blackbox-exporter:prometheus-blackbox-exporter"
                "prometheus:prometheus"
                "openssl:openssl"
            )
            ;;
        container)
            requirements+=(
                "dockerd:docker.io"
                "/usr/bin/docker:docker.io"
                "debootstrap:debootstrap"
            )
            ;;
        kubectl) requirements+=("kubectl:kubernetes-client") ;;
        browser) requirements+=("chromium:chromium") ;;
        *)
            echo "usage: $0 [tools] [venv] [bench] [container] [kubectl] [browser] [brokers]" >&2
            exit 2
            ;;
    esac
done

have_command() {
    local name=$1 dir
    command -v "$name" >/dev/null 2>&1 && return 0
    for dir in /usr/sbin /sbin /usr/local/sbin /usr/bin /usr/local/bin; do
        [[ -x "$dir/$name" ]] && return 0
    done
    return 1
}

satisfied() {
    case $1 in
        /*) [[ -x $1 ]] ;;  # this very file: another `docker` may come first on PATH
        venv) "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 ;;
        *) have_command "$1" ;;
    esac
}

missing_packages() {
    local requirement package missing=()
    for requirement in "${requirements[@]}"; do
        package=${requirement#*:}
        if ! satisfied "${requirement%%:*}" && [[ " ${missing[*]-} " != *" $package "* ]]; then
            missing+=("$package")
        fi
    done
    echo "${missing[*]-}"
}

read -r -a missing <<<"$(missing_packages)"
((${#missing[@]} == 0)) && exit 0

install="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "Missing system packages: ${missing[*]} (Debian names); no apt-get here: install them yourself." >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "Missing system packages: ${missing[*]}. Run as root:" >&2
    echo "  sudo sh -c '$install'" >&2
    exit 1
fi

echo "Installing missing system packages: ${missing[*]}" >&2
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

read -r -a still_missing <<<"$(missing_packages)"
if ((${#still_missing[@]} > 0)); then
    echo "Still missing after installation: ${still_missing[*]}" >&2
    exit 1
fi
