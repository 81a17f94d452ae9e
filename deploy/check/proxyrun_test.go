package check

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/csv"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The proxies run with the shipped files, rewritten only where a test on
// this host must differ: TLS files, pid, log and temp paths in a temporary
// directory, a loopback port instead of :443, the nodes' addresses (and
// the health checks' admin port) replaced by one local presenced, no user
// switch or chroot (it may run unprivileged), HAProxy's maxconn cut to
// fit this process's fd limit, and a HAProxy stats socket to read its
// health checks. Everything else (timeouts, headers, limits, checks) is
// what ships.

// testCert writes a self-signed certificate for 127.0.0.1 and
// presence.example.com into dir: tls.crt, tls.key and tls.pem (both, for
// HAProxy). The clients trust it through SSL_CERT_FILE (TestMain).
func testCert(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "presence.example.com"},
		DNSNames:              []string{"presence.example.com"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	k := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	for name, data := range map[string][]byte{"tls.crt": crt, "tls.key": k, "tls.pem": append(append([]byte{}, crt...), k...)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// certDir holds testCert's files for the whole test binary (TestMain).
var certDir string

// findTool is the path of an installed proxy, or "" (the test skips).
func findTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/" + name); err == nil {
		return "/usr/sbin/" + name
	}
	return ""
}

// rewrite applies old → new replacements (regular expressions, each of
// which must match) to the shipped file and writes it to dst.
func rewrite(t *testing.T, src, dst string, pairs ...string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for i := 0; i < len(pairs); i += 2 {
		re := regexp.MustCompile(pairs[i])
		if !re.MatchString(s) {
			t.Fatalf("%s: no line matches %q: update proxyrun_test.go with the file", src, pairs[i])
		}
		s = re.ReplaceAllString(s, pairs[i+1])
	}
	if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runNginx starts nginx with the shipped nginx.conf and presenced.conf in
// front of n, listening on a loopback port it returns.
func runNginx(t *testing.T, bin string, n node) string {
	t.Helper()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "logs"), 0o755)
	port := fmt.Sprint(freePort(t))
	rewrite(t, "../nginx/presenced.conf", filepath.Join(dir, "presenced.conf"),
		`/etc/nginx/tls/presence\.example\.com\.crt`, filepath.Join(certDir, "tls.crt"),
		`/etc/nginx/tls/presence\.example\.com\.key`, filepath.Join(certDir, "tls.key"),
		`listen 443 ssl;`, "listen 127.0.0.1:"+port+" ssl;",
		`(?m)^ *listen \[::\]:443 ssl;\n`, "",
		`10\.0\.0\.1[0-9]:8080`, n.addr)
	temps := ""
	for _, p := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		temps += fmt.Sprintf(" %s_temp_path %s;", p, filepath.Join(dir, p))
	}
	rewrite(t, "../nginx/nginx.conf", filepath.Join(dir, "nginx.conf"),
		`(?m)^pid .*`, "pid "+filepath.Join(dir, "nginx.pid")+";",
		`(?m)^error_log .*`, "error_log stderr;",
		`(?m)^user .*`, "",
		`(?m)^include /etc/nginx/modules-enabled.*`, "",
		// One worker: each preallocates worker_connections (262144).
		`(?m)^worker_processes .*`, "worker_processes 1;",
		`access_log /var/log/nginx/access\.log;`, "access_log "+filepath.Join(dir, "logs", "access.log")+";"+temps,
		`include /etc/nginx/conf\.d/\*\.conf;`, "include "+filepath.Join(dir, "presenced.conf")+";")
	p := start(t, bin, "-p", dir, "-e", "stderr", "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	waitListening(t, "nginx", p, "127.0.0.1:"+port)
	return "127.0.0.1:" + port
}

// runHAProxy starts HAProxy with the shipped haproxy.cfg in front of n,
// on a loopback port; it returns that address and the stats socket's path.
func runHAProxy(t *testing.T, bin string, n node) (addr, sock string) {
	t.Helper()
	dir := t.TempDir()
	port := fmt.Sprint(freePort(t))
	sock = filepath.Join(dir, "admin.sock")
	pairs := []string{
		`/etc/haproxy/tls/presence\.example\.com\.pem`, filepath.Join(certDir, "tls.pem"),
		`bind :443 `, "bind 127.0.0.1:" + port + " ",
		`(?m)^ *(user|group|chroot) .*\n`, "",
		`10\.0\.0\.1[0-9]:8080`, n.addr,
		`check port 9090`, "check port " + n.adminPort,
		`(?m)^global\n`, "global\n    stats socket " + sock + " level admin\n",
	}
	// About 2 fds per connection: where this process cannot give HAProxy
	// that many (no CAP_SYS_RESOURCE), maxconn is cut to fit, as in tools.sh.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Max < 2*500000+32 {
		pairs = append(pairs, `(?m)^( *maxconn) .*`, fmt.Sprintf("${1} %d", (lim.Max-100)/2))
	}
	rewrite(t, "../haproxy/haproxy.cfg", filepath.Join(dir, "haproxy.cfg"), pairs...)
	p := start(t, bin, "-db", "-f", filepath.Join(dir, "haproxy.cfg"))
	waitListening(t, "haproxy", p, "127.0.0.1:"+port)
	return "127.0.0.1:" + port, sock
}

// waitListening waits until p accepts TCP connections on addr.
func waitListening(t *testing.T, what string, p *proc, addr string) {
	t.Helper()
	waitFor(t, 10*time.Second, what+" listening on "+addr, func() bool {
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v", what, p.cmd.ProcessState)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// haproxyServers returns, per server of backend presenced, its status
// and last check ("UP L7OK 200") from the stats socket's show stat.
func haproxyServers(t *testing.T, sock string) map[string]string {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		t.Fatalf("haproxy stats socket: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("show stat\n")); err != nil {
		t.Fatal(err)
	}
	r := csv.NewReader(bufio.NewReader(c))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("show stat: %v (%d rows)", err, len(rows))
	}
	col := map[string]int{}
	for i, name := range rows[0] {
		col[strings.TrimPrefix(name, "# ")] = i
	}
	servers := map[string]string{}
	for _, row := range rows[1:] {
		if len(row) <= col["check_code"] || row[col["pxname"]] != "presenced" || strings.ToUpper(row[col["svname"]]) == "BACKEND" {
			continue
		}
		// "* " marks a check in progress.
		check := strings.TrimPrefix(row[col["check_status"]], "* ")
		servers[row[col["svname"]]] = strings.Join([]string{row[col["status"]], check, row[col["check_code"]]}, " ")
	}
	return servers
}
