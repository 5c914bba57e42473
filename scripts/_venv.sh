# Sourced by the scripts: make sure .venv exists and holds the project with its test and
# bench extras (bench: matplotlib, for ./scripts/bench load's plot), installing only when
# pyproject.toml changed since the last install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
stamp=.venv/.veil-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log=.venv/install.log
    echo "setting up .venv (log: $log)" >&2
    if ! { .venv/bin/python -m pip install --upgrade pip &&
           .venv/bin/python -m pip install -e '.[test,bench]'; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "installing the project into .venv failed (full log: $log)" >&2
        exit 1
    fi
    touch "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
