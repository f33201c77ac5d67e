#!/usr/bin/env bash
# ansible-test sanity on the working tree, as `make lint` runs it; arguments
# are passed on to ansible-test (e.g. --test validate-modules). Which tests run
# and why the others do not: docs/testing.md, "Sanity".
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
PATH="$top/.venv/bin:$PATH"
python_version=3.11
# ansible-test needs the collection at a real path (not a symlink) ending in
# ansible_collections/<namespace>/<name>.
dest="$top/.venv/sanity/ansible_collections/dmzkit/remote_access"
# pslint checks PowerShell, of which the collection has none.
common=(--local --python "$python_version" --color no --skip-test pslint)
# pylint holds code to Ansible's own conventions (no "_" as a throwaway name,
# ...), so it checks the code Ansible loads and its unit tests; pyflakes checks
# the services, the lab and the rest of the tests (make lint).
pylint_paths=(plugins/ tests/unit/plugins/)

# The tests' venvs get pip from a script ansible-test downloads from a host
# the lab machines cannot reach; a cached copy is used instead when present.
install_get_pip() {
    local version cache
    version=$(python - "$python_version" <<'PY'
import sys
from types import SimpleNamespace
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(SimpleNamespace(version=sys.argv[1]))["pip"])
PY
)
    cache="$HOME/.ansible/test/cache/get_pip_${version//./_}.py"
    # keep a real get-pip fetched by a machine that can reach the host
    if [[ -e $cache ]] && ! grep -qF "dmzkit.remote_access get-pip stand-in" "$cache"; then
        return
    fi
    if ! cmp -s "$top/tests/sanity/get_pip_standin.py" "$cache"; then
        install -D -m 0644 "$top/tests/sanity/get_pip_standin.py" "$cache"
        echo "installed the get-pip stand-in as $cache"
    fi
}

# The working tree as git sees it: tracked files and untracked ones it does
# not ignore (a file deleted but not yet committed is left out). The copy gets a
# repository of its own: ansible-test asks the nearest one for the files to
# test (tracked or untracked, not ignored), and the checkout's ignores .venv.
copy_collection() {
    rm -rf "$dest"
    mkdir -p "$dest"
    git init --quiet "$dest"
    git -C "$top" ls-files -z --cached --others --exclude-standard \
        | (cd "$top" && while IFS= read -r -d '' f; do
               if [[ -e $f || -L $f ]]; then printf '%s\0' "$f"; fi
           done) \
        | tar -C "$top" --null --verbatim-files-from -T - -cf - \
        | tar -C "$dest" -xf -
}

command -v shellcheck >/dev/null \
    || { echo "shellcheck is missing: make host installs it" >&2; exit 1; }
install_get_pip
copy_collection
cd "$dest"
status=0
if (($#)); then
    ansible-test sanity "${common[@]}" "$@" || status=$?
else
    ansible-test sanity "${common[@]}" --skip-test pylint || status=$?
    ansible-test sanity "${common[@]}" --test pylint "${pylint_paths[@]}" || status=$?
fi
echo "sanity: $SECONDS s"
exit "$status"
