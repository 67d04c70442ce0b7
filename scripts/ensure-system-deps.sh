#!/usr/bin/env bash
# Make sure the system packages the build and the test suite need are present; install the
# missing ones from Debian packages when running as root, else say what to install.
#   make          runs the targets (absent from slim images)
#   python3-venv  `python3 -m venv` on Debian's own Python (pyenv or python.org builds have it)
#   postgresql    the server for the PostgreSQL half of the suite (scripts/pg-test-cluster.sh)
#   fonts-dejavu-core  a Unicode TrueType font for PDF reports (names with any accent)
#   chromium      the browser of the browser tests (tests/browser/), driven by Playwright at
#                 /usr/bin/chromium; `playwright install` is never used (it downloads builds)
# Python 3.11 itself is a prerequisite, not installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v make >/dev/null 2>&1 || missing+=(make)
py="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
if [ -z "$py" ]; then
    echo "ensure-system-deps: Python 3.11 is needed (python3.11 or python3)" >&2
    exit 1
fi
"$py" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
bash scripts/pg-test-cluster.sh bindir >/dev/null 2>&1 || missing+=(postgresql)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
[ -x /usr/bin/chromium ] || missing+=(chromium)

if [ ${#missing[@]} -eq 0 ]; then
    echo "==> system prerequisites present: make, Python venv, PostgreSQL, DejaVu fonts, Chromium"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-system-deps: missing ${missing[*]}: install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
command -v apt-get >/dev/null 2>&1 \
    || { echo "ensure-system-deps: missing ${missing[*]} and apt-get is not available" >&2; exit 1; }

echo "==> installing system packages: ${missing[*]}"
log="$(mktemp)"
if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
        --no-install-recommends "${missing[@]}"; } </dev/null >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    rm -f "$log"
    echo "ensure-system-deps: apt-get install ${missing[*]} failed" >&2
    exit 1
fi
rm -f "$log"
