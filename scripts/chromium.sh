# Sourced by test.sh: the browser tests drive Debian's Chromium (/usr/bin/chromium). Install it
# when it is missing and this user may (root, or sudo without a password); otherwise say so,
# and those tests skip with that reason.
if ! command -v chromium >/dev/null 2>&1; then
    APT=""
    if [ "$(id -u)" = 0 ]; then
        APT="apt-get"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        APT="sudo apt-get"
    fi
    if [ -n "$APT" ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian's chromium for the browser tests" >&2
        $APT update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $APT install -y -qq chromium chromium-driver >/dev/null
    else
        echo "setup: chromium is missing and cannot be installed here (no root or apt):" \
            "the browser tests will skip" >&2
    fi
fi
if [ -n "${CI:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    echo "error: CI needs Debian's chromium for the browser tests and it could not be installed" >&2
    exit 1
fi
