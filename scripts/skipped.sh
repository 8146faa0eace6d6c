#!/bin/sh
# Usage: skipped.sh BUILD-DIR
# After `meson test`: name every skipped test and why (the last "SKIP" line of its output), so a
# suite that needs absent hardware (a GPU) never passes silently.
set -eu
log="$1/meson-logs/testlog.json"
[ -f "$log" ] || exit 0
python3 - "$log" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    t = json.loads(line)
    if t.get("result") != "SKIP":
        continue
    why = [l for l in (t.get("stdout") or "").splitlines() if "SKIP" in l]
    print("skipped: %s: %s" % (t["name"], why[-1].strip() if why else "(no reason printed)"))
PY
