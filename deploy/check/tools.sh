#!/usr/bin/env bash
# Validates deploy/'s host and proxy files with the real tools, without
# root-owned paths: every pid, log, temp file and test certificate lives
# in a temporary directory. A tool that is missing fails the check (make
# deps-deploy installs nginx, haproxy, openssl and systemd on Debian);
# only the namespace for sysctl -p is skipped, with a message, where this
# host refuses unshare (a container without user namespaces).
# Usage: deploy/check/tools.sh PRESENCED_BINARY   (from the repository root)
set -euo pipefail

bin=${1:?usage: tools.sh PRESENCED_BINARY}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0

# Every key of sysctl.conf is a setting of this kernel (a misspelt key
# makes `sysctl --system` fail), and the open-file limits of limits.conf
# and the unit do not exceed its fs.nr_open.
if [ -d /proc/sys/net/ipv4 ]; then
	bad=0
	while read -r key _ value; do
		if [ ! -e "/proc/sys/${key//.//}" ]; then
			echo "deploy-check: deploy/sysctl.conf: $key is no setting of this kernel"; bad=1
		fi
	done < <(grep -E '^[a-z]' deploy/sysctl.conf)
	[ $bad = 0 ] && echo "deploy-check: deploy/sysctl.conf: every key exists in /proc/sys" || fail=1
else
	echo "deploy-check: no /proc/sys: deploy/sysctl.conf's keys not checked: FAILED"; fail=1
fi

# Its values, set by the real tool where that touches nothing of the host:
# `sysctl -p` in a throwaway user and network namespace, on the keys that
# namespace has (net.* per network namespace; the kernel answers "Invalid
# argument" to a bad value). Only net.* keys go in: a non-namespaced key
# (fs.nr_open) would be written to the host itself when this runs as root.
# The keys a new network namespace does not have (global net.core and
# net.ipv4 ones, fs.*) must be integers (lists of them).
grep -E '^net\.' deploy/sysctl.conf >"$tmp/sysctl-net.conf"
if out=$(unshare --user --map-root-user --net true 2>&1); then
	out=$(unshare --user --map-root-user --net sysctl -p "$tmp/sysctl-net.conf" 2>&1) || true
	set_keys=$(grep -cE '^net\.[a-z0-9_.]+ = ' <<<"$out" || true)
	if grep -qiE 'invalid|error|denied|unknown' <<<"$out"; then
		grep -iE 'invalid|error|denied|unknown' <<<"$out"
		echo "deploy-check: sysctl -p deploy/sysctl.conf (net.* keys, in a throwaway network namespace): FAILED"; fail=1
	else
		echo "deploy-check: sysctl -p deploy/sysctl.conf in a throwaway network namespace: $set_keys net.* values accepted"
	fi
	nonns=$(grep -oE "cannot stat /proc/sys/[a-z0-9_/]+" <<<"$out" | sed 's|.*/proc/sys/||; s|/|.|g')
else
	echo "deploy-check: unshare --user --net refused here ($out): deploy/sysctl.conf's net.* values only checked as integers"
	nonns=$(awk -F' *= *' '/^net\./ { print $1 }' deploy/sysctl.conf)
fi
bad=0 others="$nonns $(awk -F' *= *' '/^[a-z]/ && !/^net\./ { print $1 }' deploy/sysctl.conf)"
for key in $others; do
	v=$(awk -F' *= *' -v k="$key" '$1 == k { print $2; exit }' deploy/sysctl.conf)
	[[ $key == net.ipv4.ip_local_reserved_ports ]] && re='^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$' || re='^[0-9]+([ 	]+[0-9]+)*$'
	[[ $v =~ $re ]] || { echo "deploy-check: deploy/sysctl.conf: $key = '$v' is not a number (or numbers)"; bad=1; }
done
[ $bad = 0 ] && echo "deploy-check: deploy/sysctl.conf: the keys outside a network namespace ($(echo $others)) are integers" || fail=1
# fs.nr_open: sysctl.conf's value if it sets one (it must not lower
# systemd's), else the kernel default 1048576, the least any host has.
nr_open=$(awk '$1 == "fs.nr_open" { print $3 }' deploy/sysctl.conf)
if [ -n "$nr_open" ] && [ "$nr_open" -lt 1073741816 ]; then
	echo "deploy-check: deploy/sysctl.conf sets fs.nr_open $nr_open below systemd's 1073741816"; fail=1
fi
if awk '$1 == "fs.file-max" { exit 1 }' deploy/sysctl.conf; then :; else
	echo "deploy-check: deploy/sysctl.conf sets fs.file-max: it would lower systemd's LONG_MAX"; fail=1
fi
nr_open=${nr_open:-1048576}
# isnum: a non-negative integer ([ x -gt y ] on a word is an error, which
# an if takes for false: the check would pass).
isnum() { [[ ${1:-} =~ ^[0-9]+$ ]]; }
isnum "$nr_open" || { echo "deploy-check: deploy/sysctl.conf: fs.nr_open '$nr_open' is not a number"; fail=1; nr_open=0; }
limits="$(awk '$3 == "nofile" { print $4 }' deploy/limits.conf) $(sed -n 's/^LimitNOFILE=//p' deploy/presenced.service)"
[ "$(wc -w <<<"$limits")" -ge 3 ] || { echo "deploy-check: want limits.conf's soft and hard nofile and the unit's LimitNOFILE, found '$limits'"; fail=1; }
for limit in $limits; do
	if ! isnum "$limit"; then
		echo "deploy-check: open-file limit '$limit' is not a number"; fail=1
	elif [ "$limit" -gt "$nr_open" ]; then
		echo "deploy-check: open-file limit $limit exceeds fs.nr_open $nr_open"; fail=1
	fi
done

# PresencedFileDescriptorsNearLimit (alerts.yml, open/max above a ratio)
# stays quiet on the 1M-connection host that docs/operations.md sizes: the
# unit's LimitNOFILE times the ratio holds 1M connections and ~1000 more fds.
ratio=$(sed -n 's|.*process_open_fds{[^}]*} / process_max_fds{[^}]*} > \([0-9.]*\).*|\1|p' deploy/prometheus/alerts.yml | head -1)
unit_nofile=$(sed -n 's/^LimitNOFILE=//p' deploy/presenced.service)
if [ -n "$ratio" ] && [ -n "$unit_nofile" ] && awk -v r="$ratio" -v l="$unit_nofile" 'BEGIN { exit !(r * l >= 1001000) }'; then
	echo "deploy-check: LimitNOFILE $unit_nofile x the fd alert's $ratio holds 1M connections"
else
	echo "deploy-check: LimitNOFILE ${unit_nofile:-(unset)} x the fd alert's ratio ${ratio:-(not found in alerts.yml)} is below 1M connections: the 1M host would alert"; fail=1
fi

# The values that matter most for many connections are in sane ranges,
# not only valid keys: the accept queue holds presenced's listen backlog
# (poller/listen_linux.go; the kernel cuts it to somaxconn), the SYN queue
# at least as much, the ephemeral port range wide (the proxy's and the
# load side's outbound connections) and presenced's ports (README's
# presenced.env) reserved out of it, the TCP memory triples ordered.
sysctl_val() { awk -v k="$1" '$1 == k { $1 = $2 = ""; sub(/^ +/, ""); print; exit }' deploy/sysctl.conf; }
backlog=$(sed -n 's/.*unix\.Listen(fd, \([0-9]*\)).*/\1/p' poller/listen_linux.go 2>/dev/null | head -1)
isnum "$backlog" || { echo "deploy-check: no unix.Listen(fd, N) in poller/listen_linux.go: presenced's listen backlog unknown: FAILED"; fail=1; backlog=4096; }
somax=$(sysctl_val net.core.somaxconn) syn=$(sysctl_val net.ipv4.tcp_max_syn_backlog)
read -r plo phi <<<"$(sysctl_val net.ipv4.ip_local_port_range)" || true
reserved=",$(sysctl_val net.ipv4.ip_local_reserved_ports),"
bad=0
for v in somax syn plo phi; do
	isnum "${!v}" || { echo "deploy-check: deploy/sysctl.conf: somaxconn, tcp_max_syn_backlog and ip_local_port_range must be numbers ($v '${!v}')"; bad=1; fail=1; eval "$v=0"; }
done
if [ -z "$somax" ] || [ "$somax" -lt "$backlog" ]; then
	echo "deploy-check: deploy/sysctl.conf: net.core.somaxconn ${somax:-(unset)} is below presenced's listen backlog $backlog"; bad=1
fi
if [ -z "$syn" ] || [ "$syn" -lt "${somax:-$backlog}" ]; then
	echo "deploy-check: deploy/sysctl.conf: net.ipv4.tcp_max_syn_backlog ${syn:-(unset)} is below somaxconn ${somax:-$backlog}"; bad=1
fi
if [ -z "$plo" ] || [ -z "$phi" ] || [ "$plo" -lt 1024 ] || [ "$phi" -gt 65535 ] || [ $((phi - plo + 1)) -lt 50000 ]; then
	echo "deploy-check: deploy/sysctl.conf: net.ipv4.ip_local_port_range '${plo:-} ${phi:-}' must lie in 1024-65535 and span at least 50000 ports"; bad=1
fi
for p in $(sed -n 's/^PRESENCED_\(ADMIN_\)\{0,1\}ADDR=.*:\([0-9]*\)$/\2/p' deploy/README.md); do
	if [ -n "$plo" ] && [ "$p" -ge "$plo" ] && [ "$p" -le "${phi:-0}" ] && [[ $reserved != *",$p,"* ]]; then
		echo "deploy-check: deploy/sysctl.conf: presenced's port $p (README's presenced.env) is in ip_local_port_range but not in ip_local_reserved_ports"; bad=1
	fi
done
for key in net.ipv4.tcp_mem net.ipv4.tcp_rmem net.ipv4.tcp_wmem; do
	read -r a b c <<<"$(sysctl_val "$key")" || true
	if [ -n "$a" ] && { ! isnum "$a" || ! isnum "$b" || ! isnum "$c" || [ "$a" -gt "$b" ] || [ "$b" -gt "$c" ]; }; then
		echo "deploy-check: deploy/sysctl.conf: $key '$a $b $c' is not three increasing values (min, default or pressure, max)"; bad=1
	fi
done
if [ $bad = 0 ]; then
	echo "deploy-check: deploy/sysctl.conf: somaxconn $somax >= backlog $backlog, tcp_max_syn_backlog $syn, ports $plo-$phi with presenced's reserved, TCP memory ordered"
else fail=1; fi

# The admin listener of the documented install (README's presenced.env)
# is what HAProxy health-checks and Prometheus scrapes: same port, a
# node address (not loopback) that is one of haproxy.cfg's servers and
# scrape.yml's targets.
admin=$(sed -n 's/^PRESENCED_ADMIN_ADDR=//p' deploy/README.md | head -1)
admin_host=${admin%:*} admin_port=${admin##*:}
hc_port=$(sed -n 's/.* check port \([0-9]*\).*/\1/p' deploy/haproxy/haproxy.cfg | head -1)
servers=$(awk '$1 == "server" { sub(/:.*/, "", $3); print $3 }' deploy/haproxy/haproxy.cfg | sort)
targets=$(sed -n 's/^ *- \([0-9.]*\):\([0-9]*\)$/\1 \2/p' deploy/prometheus/scrape.yml)
bad=0
case $admin_host in ''|127.*|localhost|::1|'[::1]') echo "deploy-check: README's PRESENCED_ADMIN_ADDR=$admin is loopback: HAProxy's checks and Prometheus cannot reach it"; bad=1;; esac
[ "$hc_port" = "$admin_port" ] || { echo "deploy-check: haproxy.cfg checks port ${hc_port:-(none)}, README's admin port is $admin_port"; bad=1; }
echo "$servers" | grep -qx "$admin_host" || { echo "deploy-check: README's admin host $admin_host is no server of haproxy.cfg"; bad=1; }
[ -n "$targets" ] || { echo "deploy-check: no scrape targets found in scrape.yml"; bad=1; }
while read -r host port; do
	[ -z "$host" ] && continue
	[ "$port" = "$admin_port" ] || { echo "deploy-check: scrape.yml target $host:$port is not on the admin port $admin_port"; bad=1; }
done <<<"$targets"
[ "$(echo "$targets" | awk '{print $1}' | sort)" = "$servers" ] || { echo "deploy-check: scrape.yml's targets are not haproxy.cfg's servers"; bad=1; }
if [ $bad = 0 ]; then echo "deploy-check: admin listener $admin: haproxy.cfg's checks and scrape.yml's targets agree"; else fail=1; fi

# The lines that make the proxies what README.md says they are must be
# there (a check that loops over what it finds passes when none is):
# per-IP limits in both, drain-friendly reloads (old workers keep their
# WebSockets for a while), HAProxy's health check of /readyz.
bad=0
while IFS='|' read -r file re what; do
	[ -z "$file" ] && continue
	n=$(grep -cE "$re" "deploy/$file" || true)
	[ "$n" = 1 ] || { echo "deploy-check: deploy/$file: want exactly one line matching '$re' ($what), found $n"; bad=1; }
done <<'REQ'
nginx/presenced.conf|^ *limit_conn_zone \$binary_remote_addr zone=presenced_conn:|the per-IP connection zone
nginx/presenced.conf|^ *limit_req_zone \$binary_remote_addr zone=presenced_upgrade:[0-9]+m rate=[0-9]+r/s;|the per-IP upgrade rate zone
nginx/presenced.conf|^ *limit_conn presenced_conn [0-9]+;|the per-IP cap of open connections
nginx/presenced.conf|^ *limit_req zone=presenced_upgrade burst=[0-9]+( nodelay)?;|the per-IP cap of new connections
nginx/nginx.conf|^worker_shutdown_timeout [0-9]+[sm];|old workers keep WebSockets on reload
haproxy/haproxy.cfg|^ *hard-stop-after [0-9]+[sm]$|old workers keep WebSockets on reload
haproxy/haproxy.cfg|^ *stick-table type ip .*store conn_cur,conn_rate|per-IP counters
haproxy/haproxy.cfg|^ *tcp-request connection track-sc0 src|per-IP tracking
haproxy/haproxy.cfg|^ *tcp-request connection reject if \{ sc0_conn_cur gt [0-9]+ \}$|the per-IP cap of open connections
haproxy/haproxy.cfg|^ *tcp-request connection reject if \{ sc0_conn_rate gt [0-9]+ \}$|the per-IP cap of new connections
haproxy/haproxy.cfg|^ *option httpchk$|HTTP health checks
haproxy/haproxy.cfg|^ *http-check send meth GET uri /readyz$|the health check asks /readyz
haproxy/haproxy.cfg|^ *http-check expect status 200$|a draining node (503) fails it
REQ
if [ $bad = 0 ]; then echo "deploy-check: proxies: per-IP limits, reload timeouts and HAProxy's /readyz check present"; else fail=1; fi

# Per-IP caps in the proxies fit users behind a NAT or CGNAT (many
# users, one address): at least 1000 open connections per address.
for cap in $(sed -n 's/.*limit_conn presenced_conn \([0-9]*\);.*/\1/p' deploy/nginx/presenced.conf) \
	$(sed -n 's/.*sc0_conn_cur gt \([0-9]*\).*/\1/p' deploy/haproxy/haproxy.cfg); do
	if [ "$cap" -lt 1000 ]; then
		echo "deploy-check: a proxy caps one address at $cap open connections: users behind a NAT share one"; fail=1
	fi
done

# The proxies' idle timeouts exceed presenced's heartbeat (-hb-interval +
# -hb-timeout, defaults from `presenced -h`), so presenced, not the proxy,
# decides which connection is dead; nginx forwards the upgrade headers.
secs() { case $1 in *ms) echo 0;; *m) echo $((${1%m} * 60));; *s) echo "${1%s}";; *) echo "$1";; esac; }
hb=$("$bin" -h 2>&1 | sed -n '/^  -hb-interval /,/default/s/.*(default \([0-9a-z]*\)).*/\1/p' | head -1)
hbt=$("$bin" -h 2>&1 | sed -n '/^  -hb-timeout /,/default/s/.*(default \([0-9a-z]*\)).*/\1/p' | head -1)
if [ -n "$hb" ] && [ -n "$hbt" ]; then
	dead=$(( $(secs "$hb") + $(secs "$hbt") ))
	bad=0
	for t in $(sed -n 's/^ *proxy_\(read\|send\)_timeout \([0-9a-z]*\);.*/\2/p' deploy/nginx/presenced.conf) \
		$(sed -n 's/^ *timeout tunnel \([0-9a-z]*\).*/\1/p' deploy/haproxy/haproxy.cfg); do
		if [ "$(secs "$t")" -le "$dead" ]; then
			echo "deploy-check: a proxy idle timeout of $t is not above the heartbeat's $hb + $hbt"; bad=1
		fi
	done
	for h in 'proxy_set_header Upgrade $http_upgrade;' 'proxy_set_header Connection $presenced_connection;' 'proxy_http_version 1.1;'; do
		grep -qF "$h" deploy/nginx/presenced.conf || { echo "deploy-check: deploy/nginx/presenced.conf lacks $h"; bad=1; }
	done
	grep -q '^ *timeout tunnel ' deploy/haproxy/haproxy.cfg || { echo "deploy-check: haproxy.cfg has no timeout tunnel"; bad=1; }
	if [ $bad = 0 ]; then echo "deploy-check: proxies' idle timeouts exceed the heartbeat ($hb + $hbt), nginx forwards the upgrade"; else fail=1; fi
else
	echo "deploy-check: -hb-interval/-hb-timeout defaults not found in presenced -h: FAILED"; fail=1
fi

# systemd-analyze verify checks that ExecStart is executable: the unit is
# verified as a copy whose ExecStart is the freshly built binary.
if command -v systemd-analyze >/dev/null 2>&1; then
	# systemd exits 0 on a directive it ignores ("Unknown key ... ignoring",
	# "Failed to parse ..., ignoring"): the unit would run with the default
	# instead. Any warning fails; the shipped unit prints nothing.
	sed "s|/usr/local/bin/presenced|$bin|" deploy/presenced.service >"$tmp/presenced.service"
	rc=0; out=$(systemd-analyze verify "$tmp/presenced.service" 2>&1) || rc=$?
	if [ $rc = 0 ] && ! grep -qiE 'unknown|ignoring|failed|invalid|warning' <<<"$out"; then
		echo "deploy-check: systemd-analyze verify deploy/presenced.service: ok, no warnings"
	else
		echo "$out"
		echo "deploy-check: systemd-analyze verify deploy/presenced.service (rc $rc, or warnings above): FAILED"; fail=1
	fi
else
	echo "deploy-check: systemd-analyze not found (make deps installs systemd): deploy/presenced.service not verified: FAILED"; fail=1
fi

# A throwaway certificate for the proxies' TLS lines.
cert() {
	openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=presence.example.com \
		-keyout "$tmp/tls.key" -out "$tmp/tls.crt" >/dev/null 2>&1
	cat "$tmp/tls.crt" "$tmp/tls.key" >"$tmp/tls.pem"
}
if command -v openssl >/dev/null 2>&1; then cert; fi

nginx=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)
if [ -n "$nginx" ] && [ -f "$tmp/tls.pem" ]; then
	# The shipped main config (deploy/nginx/nginx.conf) including
	# presenced.conf, with every path under $tmp; the worker_connections and
	# worker_rlimit_nofile tested are the shipped ones.
	mkdir -p "$tmp/nginx/logs"
	sed -e "s|/etc/nginx/tls/presence.example.com.crt|$tmp/tls.crt|" \
		-e "s|/etc/nginx/tls/presence.example.com.key|$tmp/tls.key|" \
		deploy/nginx/presenced.conf >"$tmp/nginx/presenced.conf"
	sed -e "s|^pid .*|pid $tmp/nginx/nginx.pid;|" \
		-e "s|^error_log .*|error_log $tmp/nginx/logs/error.log;|" \
		-e "s|^user .*||" -e "s|^include /etc/nginx/modules-enabled.*||" \
		-e "s|access_log /var/log/nginx/access.log;|access_log $tmp/nginx/logs/access.log; client_body_temp_path $tmp/nginx/body; proxy_temp_path $tmp/nginx/proxy; fastcgi_temp_path $tmp/nginx/fastcgi; uwsgi_temp_path $tmp/nginx/uwsgi; scgi_temp_path $tmp/nginx/scgi;|" \
		-e "s|include /etc/nginx/conf.d/\*.conf;|include $tmp/nginx/presenced.conf;|" \
		deploy/nginx/nginx.conf >"$tmp/nginx/nginx.conf"
	# Two connections per WebSocket: Debian's 768 holds 384; the fd limit
	# must cover worker_connections.
	wc=$(awk '$1 == "worker_connections" { sub(/;/, "", $2); print $2 }' deploy/nginx/nginx.conf)
	rl=$(awk '$1 == "worker_rlimit_nofile" { sub(/;/, "", $2); print $2 }' deploy/nginx/nginx.conf)
	if [ -z "$wc" ] || [ -z "$rl" ] || [ "$wc" -le 768 ] || [ "$rl" -lt "$wc" ] || [ "$rl" -gt 1048576 ]; then
		echo "deploy-check: deploy/nginx/nginx.conf: worker_connections ${wc:-(unset)} must exceed Debian's 768 and fit worker_rlimit_nofile ${rl:-(unset)} <= 1048576: FAILED"; fail=1
	fi
	if "$nginx" -q -t -p "$tmp/nginx" -e "$tmp/nginx/logs/error.log" -c "$tmp/nginx/nginx.conf"; then
		echo "deploy-check: nginx -t deploy/nginx/nginx.conf with presenced.conf: ok"
	else
		echo "deploy-check: nginx -t deploy/nginx/presenced.conf: FAILED"; fail=1
	fi
else
	echo "deploy-check: nginx or openssl not found (make deps-deploy installs them): deploy/nginx/presenced.conf not checked: FAILED"; fail=1
fi

haproxy=$(command -v haproxy || ls /usr/sbin/haproxy 2>/dev/null || true)
if [ -n "$haproxy" ] && [ -f "$tmp/tls.pem" ]; then
	sed "s|/etc/haproxy/tls/presence.example.com.pem|$tmp/tls.pem|" deploy/haproxy/haproxy.cfg >"$tmp/haproxy.cfg"
	# -q hides the errors too: the output is shown when the check fails.
	if out=$("$haproxy" -c -f "$tmp/haproxy.cfg" 2>&1); then
		echo "deploy-check: haproxy -c deploy/haproxy/haproxy.cfg: ok"
	else
		echo "$out"
		echo "deploy-check: haproxy -c deploy/haproxy/haproxy.cfg: FAILED"; fail=1
	fi
	# haproxy -c does not catch a global section that cannot start (a
	# maxconn needing more fds, about 2 x maxconn, than the kernel allows):
	# that need must fit fd-hard-limit and the default fs.nr_open (1048576),
	# and HAProxy is started for 2 s on a loopback port. Where this process
	# cannot raise its fd limit that far (not root, or no CAP_SYS_RESOURCE),
	# maxconn is cut to fit ulimit -Hn for that start, and said so.
	maxconn=$(awk '$1 == "maxconn" { print $2; exit }' deploy/haproxy/haproxy.cfg)
	hard=$(awk '$1 == "fd-hard-limit" { print $2; exit }' deploy/haproxy/haproxy.cfg)
	need=$((2 * ${maxconn:-0} + 32))
	if [ -z "$maxconn" ] || [ -z "$hard" ] || [ $need -gt "$hard" ] || [ $need -gt 1048576 ]; then
		echo "deploy-check: haproxy.cfg maxconn ${maxconn:-(unset)} needs $need fds: above fd-hard-limit ${hard:-(unset)} or fs.nr_open's default 1048576: FAILED"; fail=1
	fi
	# A loopback port nothing listens on (a connection to it is refused).
	for _ in $(seq 50); do
		port=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
	done
	# The servers become loopback too: the check never leaves this host.
	# No privilege drop (user, group, chroot) for this start: it may run
	# unprivileged, and it checks the fd limits, not the drop.
	sed -i -e "s|bind :443 |bind 127.0.0.1:$port |" -e '/^ *\(user\|group\|chroot\) /d' \
		-e "s|^\( *server [^ ]*\) [0-9.]*:|\1 127.0.0.1:|" "$tmp/haproxy.cfg"
	if ! prlimit --nofile=$need:$need true 2>/dev/null; then
		sed -i "s|^\( *maxconn\) .*|\1 $(( ($(ulimit -Hn) - 100) / 2 ))|" "$tmp/haproxy.cfg"
		echo "deploy-check: cannot raise RLIMIT_NOFILE to $need here: haproxy started with maxconn cut to fit ulimit -Hn $(ulimit -Hn)"
	fi
	rc=0; out=$(timeout 2 "$haproxy" -db -f "$tmp/haproxy.cfg" 2>&1) || rc=$?
	if [ $rc = 124 ] && grep -q 'Loading success' <<<"$out"; then
		echo "deploy-check: haproxy deploy/haproxy/haproxy.cfg started and ran 2 s: ok"
	else
		echo "$out" | grep ALERT | head -5
		echo "deploy-check: haproxy deploy/haproxy/haproxy.cfg did not start (rc $rc): FAILED"; fail=1
	fi
else
	echo "deploy-check: haproxy or openssl not found (make deps-deploy installs them): deploy/haproxy/haproxy.cfg not checked: FAILED"; fail=1
fi

exit $fail
