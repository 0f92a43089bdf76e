# Sourced by scripts/test and scripts/demo: the PostgreSQL server binaries, PgBouncer, openssl,
# valgrind, strace and Python's venv module from Debian's packages, when they are not there yet. Nothing is started here: the
# tests and the demo start their own throwaway servers as an unprivileged user.
missing=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
    missing+=(postgresql)
fi
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
    missing+=(pgbouncer)
fi
# the TLS tests make their own CA and certificates with the openssl command
command -v openssl >/dev/null || missing+=(openssl)
# the counted benchmarks and the instruction-count test run the client under callgrind,
# with marks built from valgrind's header by the C compiler
command -v valgrind >/dev/null || missing+=(valgrind)
command -v cc >/dev/null || missing+=(gcc libc6-dev)
# the system-call test and bench/syscalls.py count a client's calls with strace
command -v strace >/dev/null || missing+=(strace)
# .venv/ is made with python3 -m venv, which Debian ships apart
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing ${missing[*]} from Debian's packages" >&2
    $sudo apt-get update -qq
    # RUNLEVEL=1: invoke-rc.d then leaves the packages' own services stopped (we run our own)
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
