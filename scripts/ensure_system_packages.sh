#!/usr/bin/env bash
# System packages the test suite uses beyond Python and Java: Graphviz (`dot`) renders the
# architecture diagrams; Debian's PostgreSQL JDBC driver lets Spark keep its Hive metastore
# in PostgreSQL (metastore.kind = "jdbc"); Chromium runs the console's end-to-end tests. Installed with apt-get when missing and we are root; otherwise
# the tests that need them skip, naming what to install.
set -uo pipefail
missing=()
command -v dot >/dev/null 2>&1 || missing+=(graphviz)
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
[ -x /usr/bin/chromium ] || missing+=(chromium)  # the console's browser tests (tests/console/test_browser.py)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "sparkmaker: installing ${missing[*]} (apt-get)" >&2
  if ! { apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; }; }; then
    echo "sparkmaker: could not install ${missing[*]}; tests that need them will skip" >&2
  fi
else
  echo "sparkmaker: ${missing[*]} missing (apt-get install -y ${missing[*]}); tests that need them will skip" >&2
fi
exit 0
