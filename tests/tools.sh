#!/usr/bin/env bash
# The tools the deployment tests (tests/deploy) and README's tour (tests/e2e/test_tour.py)
# run, from Debian's packages: podman and runc (build and run the image), debootstrap (a
# local base image: no image registry needed), nginx (the edge), prometheus (its promtool
# checks the rules), jq and curl (the tour types them), and wrk (the fault tests measure
# capacity with it before they load a cell at a fraction of it).
#
# `make test` runs this before pytest. It installs what is missing when it may (as root,
# or with passwordless sudo); otherwise it says what is missing and how to install it,
# and goes on: the tests that need a missing tool skip, and say so at the end of the
# run (in CI, where everything is installed, such a skip fails the run instead).
set -uo pipefail

# command:package, for each tool the tests look for.
TOOLS=(podman:podman runc:runc debootstrap:debootstrap nginx:nginx promtool:prometheus jq:jq curl:curl wrk:wrk)

have() {
    # /usr/sbin is not on every user's PATH, though the tests look there too.
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

missing=()
for tool in "${TOOLS[@]}"; do
    have "${tool%%:*}" || missing+=("${tool#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "tests/tools.sh: missing ${missing[*]} (Debian package names): install them with" \
        "your system's package manager, or the deployment tests that need them skip." >&2
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo)
else
    echo "tests/tools.sh: missing ${missing[*]}; the deployment tests that need them skip." >&2
    echo "  install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 0
fi

apt_install() {
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# The tests run nginx and promtool themselves, on their own ports: the packages' own
# services (nginx on :80, prometheus on :9090) must not start. Debian's policy-rc.d
# hook (exit 101: "action forbidden") keeps them down during the install, where no
# policy is set already.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null \
        && "${as_root[@]}" chmod 755 "$policy"
    trap '"${as_root[@]}" rm -f "$policy"' EXIT
fi

echo "tests/tools.sh: installing ${missing[*]} for the deployment tests" >&2
# A fresh machine may have no package lists yet: fetch them once if the first try fails.
if ! apt_install && ! { "${as_root[@]}" apt-get update -q && apt_install; }; then
    echo "tests/tools.sh: could not install ${missing[*]}; the tests that need them skip" \
        "(install them with: apt-get install -y ${missing[*]})" >&2
fi
exit 0
