#!/usr/bin/env bash
# gen.sh - regenerate diff/testdata from a real, isolated Cyrus IMAP 3.6
# instance (Debian 12 cyrus-imapd; binaries in /usr/lib/cyrus/bin).
#
#   sudo diff/testdata/gen.sh            (run as root, from anywhere)
#
# The work is done by the Go program tests/cyrustest/cmd/genfixtures, which
# uses the tests/cyrustest harness: it starts a throw-away instance on
# 127.0.0.1 (free ports, directory under /tmp, removed afterwards), creates
# user alice, appends 12 synthetic messages, sets flags and keywords,
# expunges UID 10, then for N in 12..17 runs `reconstruct -V N user/alice`
# and copies cyrus.index/cyrus.header with mbexamine and FETCH output into
# vN/; finally v17-store/ (one UID STORE) and v17-repack/ (cyr_expire -X 0).
# It refuses to write a fixture whose mbexamine and FETCH disagree.
# Values such as uidvalidity, times and the mailbox id change on every run.
# See README.md in this directory for the files.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "gen.sh: run as root (cyrus master drops to user cyrus)" >&2; exit 1; }
[ -x /usr/lib/cyrus/bin/master ] || { echo "gen.sh: install cyrus-imapd cyrus-admin cyrus-replication sasl2-bin" >&2; exit 1; }
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
cd "$ROOT"
"$GO" run ./tests/cyrustest/cmd/genfixtures -out diff/testdata
for d in diff/testdata/v1[2-7]; do
  printf '%s: %s\n' "$d" "$(grep -m1 'Minor Version' "$d/mbexamine.txt" | tr -s ' ')"
done
