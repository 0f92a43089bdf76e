# Sourced by scripts/test and scripts/demo: the PostgreSQL server binaries and PgBouncer
# from Debian's packages, when they are not there yet. Nothing is started here: the
# tests and the demo start their own throwaway servers as an unprivileged user.
missing=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    missing+=(postgresql)
fi
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
    missing+=(pgbouncer)
fi
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing ${missing[*]} from Debian's packages" >&2
    $sudo apt-get update -qq
    # policy-rc.d keeps the packages' own services from starting: we run our own.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
