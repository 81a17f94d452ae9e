// Package presenced_test enforces the one-way imports of the house style:
//
//	cmd → internal/server → {poller, presence, auth, redisbus, webhook}
//	presence → coalesce, internal/wire;  webhook → presence;  client → internal/wire
//
// It reads the build graph with `go list -deps -json ./...`, so rules hold
// for transitive imports too, and a rule about a package that does not exist
// yet holds trivially until the package lands.
package presenced_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/presenced/presenced"

// pkg is what the rules need of `go list -json`.
type pkg struct {
	ImportPath   string
	Standard     bool
	Module       *struct{ Path string }
	Deps         []string // transitive imports of the non-test code
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// rule forbids packages matching From (and their subpackages) to depend,
// even transitively, on anything Forbidden matches.
type rule struct {
	From      string
	Forbidden []string // import path prefixes; "std-only" forbids any non-standard package
	Why       string
}

// stdOnly in Forbidden allows only standard-library dependencies.
const stdOnly = "std-only"

var rules = []rule{
	{
		From:      module + "/poller",
		Forbidden: []string{module + "/presence", module + "/internal/server", module + "/internal/redisbus", "github.com/redis/go-redis"},
		Why:       "poller is a generic WebSocket event loop: it knows nothing of presence, Redis or the server glue",
	},
	{
		From:      module + "/presence",
		Forbidden: []string{module + "/poller", "github.com/cloudwego/netpoll", "github.com/gobwas/ws", "github.com/redis/go-redis", module + "/internal/server", module + "/internal/redisbus", module + "/internal/auth", module + "/internal/webhook", "net/http", "github.com/prometheus", "github.com/golang-jwt"},
		Why:       "presence is the domain core: it declares the interfaces it consumes and adapters import it, never the reverse",
	},
	{
		From:      module + "/coalesce",
		Forbidden: []string{stdOnly},
		Why:       "coalesce is a generic coalescer built on the standard library only",
	},
	{
		From:      module + "/internal/wire",
		Forbidden: []string{stdOnly},
		Why:       "internal/wire is protocol encode/decode on the standard library only",
	},
	{
		From:      module + "/internal/auth",
		Forbidden: []string{module + "/poller", module + "/presence", module + "/internal/server", module + "/internal/redisbus"},
		Why:       "internal/auth verifies tokens; internal/server adapts it to presence's Authenticator",
	},
	{
		From:      module + "/internal/demo",
		Forbidden: []string{module + "/poller", module + "/presence", module + "/internal/server", module + "/internal/redisbus", module + "/internal/auth", module + "/internal/wire", "github.com/gobwas", "github.com/cloudwego", "github.com/prometheus"},
		Why:       "internal/demo is static files and the JS SDK's source (clients/js, this module's); internal/server hands its pages to the poller",
	},
	{
		From:      module + "/internal/webhook",
		Forbidden: []string{module + "/poller", module + "/internal/server", module + "/internal/redisbus", "github.com/redis/go-redis"},
		Why:       "internal/webhook implements presence's Events over HTTP; the server hands it to the hub or to the bus",
	},
	{
		From:      module + "/client",
		Forbidden: []string{module + "/poller", module + "/presence", module + "/internal/server", module + "/internal/redisbus"},
		Why:       "client is the public SDK: it speaks the wire protocol and imports none of the server",
	},
}

func TestImportDirection(t *testing.T) {
	pkgs := goList[pkg](t, "ImportPath,Standard,Module,Deps,Imports,TestImports,XTestImports")
	var owned int
	for _, p := range pkgs {
		if p.Module != nil && p.Module.Path == module {
			owned++
		}
	}
	if owned < 3 {
		t.Fatalf("go list found %d packages of %s; is the test run from the module?", owned, module)
	}
	for _, v := range check(pkgs, rules) {
		t.Error(v)
	}
}

// TestCheck shows that check catches each kind of violation.
func TestCheck(t *testing.T) {
	std := func(path string) pkg { return pkg{ImportPath: path, Standard: true} }
	mod := func(path string, deps ...string) pkg {
		return pkg{ImportPath: module + path, Module: &struct{ Path string }{module}, Deps: deps, Imports: deps}
	}
	cases := []struct {
		name string
		pkgs []pkg
		want []string // substrings, one per expected violation
	}{
		{
			name: "clean graph",
			pkgs: []pkg{std("net"), mod("/poller", "net"), mod("/presence", module+"/coalesce"), mod("/coalesce", "sync"), std("sync"), mod("/cmd/presenced", module+"/poller")},
		},
		{
			name: "transitive import of a forbidden package",
			pkgs: []pkg{mod("/presence/room", module+"/internal/x", module+"/poller"), mod("/internal/x", module+"/poller"), mod("/poller")},
			want: []string{"presence/room depends on " + module + "/poller"},
		},
		{
			name: "prefix match stops at a path boundary",
			pkgs: []pkg{mod("/presenceutil", module+"/poller"), mod("/poller")},
		},
		{
			name: "non-standard import in a std-only package",
			pkgs: []pkg{mod("/coalesce", "golang.org/x/sys/unix", "sync"), std("sync"), {ImportPath: "golang.org/x/sys/unix"}},
			want: []string{"coalesce depends on golang.org/x/sys/unix"},
		},
		{
			name: "import of cmd",
			pkgs: []pkg{mod("/cmd/presenced"), {ImportPath: module + "/bench", Module: &struct{ Path string }{module}, XTestImports: []string{module + "/cmd/presenced"}}},
			want: []string{"bench (in tests) imports " + module + "/cmd/presenced"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := check(tc.pkgs, rules)
			if len(got) != len(tc.want) {
				t.Fatalf("violations %q, want %d", got, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("violation %q lacks %q", got[i], w)
				}
			}
		})
	}
}

// check returns one message per violation of rules, and of "nothing
// imports cmd/", in pkgs.
func check(pkgs []pkg, rules []rule) []string {
	standard := make(map[string]bool)
	for _, p := range pkgs {
		standard[p.ImportPath] = p.Standard
	}
	var out []string
	for _, p := range pkgs {
		if p.Module == nil || p.Module.Path != module {
			continue
		}
		short := strings.TrimPrefix(p.ImportPath, module+"/")
		for _, r := range rules {
			if !within(p.ImportPath, r.From) {
				continue
			}
			for _, d := range p.Deps {
				for _, f := range r.Forbidden {
					if f == stdOnly && !standard[d] || f != stdOnly && within(d, f) {
						out = append(out, fmt.Sprintf("%s depends on %s: %s", short, d, r.Why))
					}
				}
			}
		}
		cmd := module + "/cmd"
		for _, imports := range []struct {
			where string
			list  []string
		}{{"", p.Imports}, {" (in tests)", slices.Concat(p.TestImports, p.XTestImports)}} {
			for _, imp := range imports.list {
				if within(imp, cmd) && !within(p.ImportPath, cmd) {
					out = append(out, fmt.Sprintf("%s%s imports %s: nothing imports cmd/", short, imports.where, imp))
				}
			}
		}
	}
	return out
}

// within reports whether path is prefix or one of its subpackages.
func within(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// goList returns every package of the module and every package they
// depend on, as `go list -deps -json=fields ./...` describes them, decoded
// into T.
func goList[T any](t *testing.T, fields string, args ...string) []T {
	t.Helper()
	cmd := exec.Command("go", append(append([]string{"list", "-deps"}, args...), "-json="+fields, "./...")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, &stderr)
	}
	var pkgs []T
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p T
		err := dec.Decode(&p)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}
