# Sourced by scripts/test and scripts/demo, after install-system-deps.sh: the project's own
# Python environment in .venv/ of this checkout, exactly as uv.lock pins it. It is created
# when missing and brought up to date when the lock changed; nothing is installed into the
# system's Python. Afterwards .venv/bin comes first on PATH.
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "serverless-pool needs Python 3.11 or newer as python3 (found: $(python3 --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "creating the project's environment in .venv/" >&2
    python3 -m venv .venv
fi
uv_pin=$(sed -n 's/^uv==\([0-9.]*\).*/\1/p' scripts/uv-requirements.txt)
if [ "$(.venv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$uv_pin" ]; then
    .venv/bin/python -m pip install --quiet --no-cache-dir --disable-pip-version-check \
        --require-hashes --no-deps -r scripts/uv-requirements.txt
fi
# uv's download cache stays inside .venv/ too; uv never fetches a Python of its own here.
export UV_CACHE_DIR="$PWD/.venv/.uv-cache" UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT="$PWD/.venv"
# --inexact: keep pip and uv, which the lock does not list.
.venv/bin/uv sync --frozen --inexact --all-extras --quiet
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH"
