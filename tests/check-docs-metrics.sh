#!/bin/sh
# Usage: check-docs-metrics.sh CACHENODE-BINARY docs/telemetry.md
# The doc's generated section must equal `cachenode --list-metrics`.
set -eu
doc_section=$(sed -n '/<!-- metrics:begin -->/,/<!-- metrics:end -->/p' "$2" | sed '1d;$d')
generated=$("$1" --list-metrics)
if [ "$doc_section" != "$generated" ]; then
	echo "docs/telemetry.md is out of date with the metric tables; regenerate it with" >&2
	echo "  $1 --list-metrics" >&2
	printf '%s\n' "$generated" >/tmp/cn-metrics-generated.$$
	printf '%s\n' "$doc_section" | diff -u - /tmp/cn-metrics-generated.$$ >&2 || true
	rm -f /tmp/cn-metrics-generated.$$
	exit 1
fi
echo "docs/telemetry.md matches the metric tables"
