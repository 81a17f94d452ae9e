package client

import (
	"bytes"
	"go/ast"
	"go/doc"
	"go/parser"
	"go/printer"
	"go/token"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/presenced/presenced/internal/wire"
)

// internalRef matches what the documentation of the SDK must not show: a
// package internal to the module, or one of internal/wire's identifiers.
var internalRef = regexp.MustCompile(`internal/|\bwire\.[A-Z]`)

// TestAPIOwnsItsTypes renders the package's documentation as `go doc -all`
// shows it (package doc, and every exported declaration with its doc) and
// fails on any mention of an internal package: programs outside the module
// cannot import internal/wire, so the SDK's API must not be made of its
// types, not even through aliases.
func TestAPIOwnsItsTypes(t *testing.T) {
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	p, err := doc.NewFromFiles(fset, files, "github.com/presenced/presenced/client")
	if err != nil {
		t.Fatal(err)
	}

	var leaks []string
	check := func(what, text string) {
		for _, line := range strings.Split(text, "\n") {
			if internalRef.MatchString(line) {
				leaks = append(leaks, what+": "+strings.TrimSpace(line))
			}
		}
	}
	decl := func(what, docText string, d ast.Decl) {
		var b bytes.Buffer
		if err := printer.Fprint(&b, fset, d); err != nil {
			t.Fatal(err)
		}
		check(what, docText+"\n"+b.String())
	}
	values := func(vs []*doc.Value) {
		for _, v := range vs {
			what := v.Names[0]
			if len(v.Names) > 1 {
				what += " (group)"
			}
			decl(what, v.Doc, v.Decl)
		}
	}
	funcs := func(fs []*doc.Func) {
		for _, f := range fs {
			name := f.Name
			if f.Recv != "" {
				name = f.Recv + "." + name
			}
			decl(name, f.Doc, f.Decl)
		}
	}
	check("package doc", p.Doc)
	values(p.Consts)
	values(p.Vars)
	funcs(p.Funcs)
	for _, typ := range p.Types {
		decl(typ.Name, typ.Doc, typ.Decl)
		values(typ.Consts)
		values(typ.Vars)
		funcs(typ.Funcs)
		funcs(typ.Methods)
	}
	if len(p.Types) == 0 {
		t.Fatal("go/doc found no type: is the test run from the package's directory?")
	}
	for _, l := range leaks {
		t.Errorf("the API shows an internal package: %s", l)
	}
}

// TestProtocolCodes checks that the client defines every close code and
// error code of internal/wire, with the same name and value.
func TestProtocolCodes(t *testing.T) {
	wireCodes := constLiterals(t, filepath.Join("..", "internal", "wire", "codes.go"))
	clientCodes := constLiterals(t, "protocol.go")
	n := 0
	for name, v := range wireCodes {
		if !strings.HasPrefix(name, "Close") && !strings.HasPrefix(name, "ErrCode") {
			continue
		}
		n++
		if got, ok := clientCodes[name]; !ok || got != v {
			t.Errorf("client.%s = %q (defined %v), want %s as in internal/wire", name, got, ok, v)
		}
	}
	if n < 20 {
		t.Fatalf("found %d codes in internal/wire, want the close and error codes", n)
	}
	// And the names the contract gives them.
	for _, c := range []CloseCode{CloseNormal, CloseSlowConsumer, CloseUnauthorized, 1006} {
		if got, want := c.String(), wire.CloseCode(c).String(); got != want {
			t.Errorf("CloseCode(%d).String() = %q, want %q", c, got, want)
		}
	}
}

// constLiterals returns the package-level constants of the Go file at path
// that are given a literal value, by name.
func constLiterals(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, name := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
						out[name.Name] = lit.Value
					}
				}
			}
		}
	}
	return out
}

// TestEventSyncAndDiff: a sync arrives as an EventSynced carrying Sync and
// no Diff, a diff as an EventChanged carrying Diff and no Sync, both in the
// client's own types.
func TestEventSyncAndDiff(t *testing.T) {
	t.Parallel()
	fs := newFakeServer(t)
	c, fc := dialServer(t, fs, testConfig(fs))
	errc := make(chan error, 1)
	go func() { errc <- c.Join(ctxT(t), "r", nil) }()
	fc.send(string(wire.AppendAck(nil, fc.expect(t, wire.TJoin).ID)))
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	alice := Member{User: "alice", Status: "online", Meta: []byte(`{"name":"Alice"}`)}
	bob := Member{User: "bob", Status: "away", Meta: []byte(`{}`)}
	carol := Member{User: "carol", Status: "online", Meta: []byte(`{}`)}
	equalMembers := func(a, b []Member) bool {
		return slices.EqualFunc(a, b, func(x, y Member) bool {
			return x.User == y.User && x.Status == y.Status && bytes.Equal(x.Meta, y.Meta)
		})
	}

	fc.send(`{"t":"sync","room":"r","cur":"1.1","count":3,"members":[{"u":"alice","s":"online","m":{"name":"Alice"}},{"u":"bob","s":"away","m":{}}],"typing":["bob"],"partial":true}`)
	ev := waitEvent(t, c, EventSynced)
	if ev.Room != "r" || ev.Diff != nil || ev.Sync == nil {
		t.Fatalf("synced event = %+v, want Room r, a Sync and no Diff", ev)
	}
	if s := ev.Sync; s.Cursor != "1.1" || s.Count != 3 || !s.Partial ||
		!equalMembers(s.Members, []Member{alice, bob}) || !slices.Equal(s.Typing, []string{"bob"}) {
		t.Errorf("Sync = %+v", *s)
	}

	fc.send(`{"t":"diff","room":"r","from":"1.1","cur":"1.2","count":3,"join":[{"u":"carol","s":"online","m":{}}],"update":[{"u":"alice","s":"busy","m":{"name":"Alice"}}],"leave":["bob"],"typing":[]}`)
	ev = waitEvent(t, c, EventChanged)
	if ev.Room != "r" || ev.Sync != nil || ev.Diff == nil {
		t.Fatalf("changed event = %+v, want Room r, a Diff and no Sync", ev)
	}
	busy := alice
	busy.Status = "busy"
	if d := ev.Diff; d.From != "1.1" || d.Cursor != "1.2" || d.Count != 3 ||
		!equalMembers(d.Join, []Member{carol}) || !equalMembers(d.Update, []Member{busy}) ||
		!slices.Equal(d.Leave, []string{"bob"}) || !d.TypingChanged || len(d.Typing) != 0 {
		t.Errorf("Diff = %+v", *d)
	}

	fc.send(`{"t":"diff","room":"r","from":"1.2","cur":"1.3","count":2,"leave":["carol"]}`)
	ev = waitEvent(t, c, EventChanged)
	if d := ev.Diff; d == nil || d.Cursor != "1.3" || d.Count != 2 || d.TypingChanged || d.Typing != nil || d.Join != nil || d.Update != nil {
		t.Errorf("Diff without typing = %+v, want TypingChanged false", d)
	}
	if v, _ := c.Room("r"); len(v.Typing) != 0 || v.Cursor != "1.3" || len(v.Members) != 1 {
		t.Errorf("view = %+v", v)
	}
}
