#!/usr/bin/env bash
# Runs promtool on deploy/prometheus: check rules alerts.yml, test rules
# alerts_test.yml and check config scrape.yml (which loads alerts.yml).
# Usage: deploy/check/promtool.sh PROMTOOL [pinned]   (from the repository root)
# With "pinned" (the promtool make promtool-check builds) scrape.yml is
# checked as shipped. Debian's promtool (2.42, package prometheus) is built
# without Kubernetes service discovery, so it refuses kubernetes_sd_configs:
# it checks a copy whose kubernetes_sd_configs block is replaced by a
# static_configs block, everything else (global, rule_files, the relabel
# rules) as shipped.
set -euo pipefail

promtool=$(command -v "${1:?usage: promtool.sh PROMTOOL [pinned]}") && promtool=$(realpath "$promtool") || { echo "promtool.sh: $1 not found"; exit 1; }
pinned=${2:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd deploy/prometheus
version=$("$promtool" --version 2>&1 | head -1)

"$promtool" check rules alerts.yml
"$promtool" test rules alerts_test.yml
if [ -n "$pinned" ]; then
	"$promtool" check config scrape.yml
	echo "deploy-check: the pinned promtool ($promtool): check rules, test rules, check config scrape.yml as shipped: ok"
	exit 0
fi

cp alerts.yml "$tmp/"
# The block is the kubernetes_sd_configs line and the lines indented
# deeper than it.
awk '
	in_sd && match($0, /^ */) && RLENGTH > ind && $0 !~ /^ *$/ { next }
	in_sd { in_sd = 0 }
	/^ *kubernetes_sd_configs:/ {
		match($0, /^ */); ind = RLENGTH; in_sd = 1; n++
		pad = substr($0, 1, ind)
		print pad "static_configs:"
		print pad "  - targets: [\"10.1.0.5:9090\"]"
		next
	}
	{ print }
	END { if (n != 1) { print "promtool.sh: want one kubernetes_sd_configs block in scrape.yml, found " n > "/dev/stderr"; exit 1 } }
' scrape.yml >"$tmp/scrape.yml"
"$promtool" check config "$tmp/scrape.yml"
echo "deploy-check: $version (Debian's, no Kubernetes discovery): check rules, test rules, check config on scrape.yml with kubernetes_sd_configs replaced by static_configs: ok (make promtool-check checks it as shipped)"
