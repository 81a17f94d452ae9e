package presenced_test

import (
	"errors"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// testOnlyChecked are the packages whose exported functions and methods
// must all be used by the module's non-test code: they are the server's
// internals, whose only importers are in this module, so an exported
// function that only tests call is a test hook in production code (it
// belongs in an export_test.go). The public SDK (client) is not checked:
// its API is for programs outside the module.
var testOnlyChecked = []string{
	module + "/coalesce",
	module + "/presence",
}

// implicitlyUsed are methods that are called through interfaces of other
// packages (fmt, errors, encoding/json...) rather than by name.
var implicitlyUsed = map[string]bool{
	"String": true, "GoString": true, "Format": true,
	"Error": true, "Unwrap": true, "Is": true, "As": true,
	"MarshalJSON": true, "UnmarshalJSON": true, "MarshalText": true, "UnmarshalText": true,
	"ServeHTTP": true,
}

// TestNoTestOnlyAPI type-checks every package of the module (non-test
// files only) and reports each exported function or method of the
// packages in testOnlyChecked that no non-test code uses.
func TestNoTestOnlyAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("type-checks the module")
	}
	pkgs := goList[exportPkg](t, "ImportPath,Dir,Export,GoFiles,Module", "-export")
	exports := make(map[string]string) // import path → export data file
	for _, p := range pkgs {
		exports[p.ImportPath] = p.Export
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f := exports[path]
		if f == "" {
			return nil, errors.New("no export data for " + path)
		}
		return os.Open(f)
	})

	used := make(map[string]bool)                    // FullName of every concrete function or method used
	ifaceUsed := make(map[string][]*types.Interface) // interface method name → the interfaces it was called through
	checked := make(map[string]*types.Package)
	for _, p := range pkgs {
		if p.Module == nil || p.Module.Path != module || len(p.GoFiles) == 0 {
			continue
		}
		var files []*ast.File
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		info := &types.Info{Uses: make(map[*ast.Ident]types.Object)}
		conf := types.Config{Importer: imp}
		tp, err := conf.Check(p.ImportPath, fset, files, info)
		if err != nil {
			t.Fatalf("type-check %s: %v", p.ImportPath, err)
		}
		if slices.Contains(testOnlyChecked, p.ImportPath) {
			checked[p.ImportPath] = tp
		}
		for _, obj := range info.Uses {
			fn, ok := obj.(*types.Func)
			if !ok {
				continue
			}
			if recv := fn.Signature().Recv(); recv != nil && types.IsInterface(recv.Type()) {
				iface := recv.Type().Underlying().(*types.Interface)
				if !slices.Contains(ifaceUsed[fn.Name()], iface) {
					ifaceUsed[fn.Name()] = append(ifaceUsed[fn.Name()], iface)
				}
				continue
			}
			used[fn.Origin().FullName()] = true
		}
	}
	if len(checked) != len(testOnlyChecked) {
		t.Fatalf("type-checked %d of the packages %v; is the test run from the module?", len(checked), testOnlyChecked)
	}

	var unused []string
	for _, path := range testOnlyChecked {
		scope := checked[path].Scope()
		for _, name := range scope.Names() {
			switch obj := scope.Lookup(name).(type) {
			case *types.Func:
				if obj.Exported() && !used[obj.FullName()] {
					unused = append(unused, obj.FullName())
				}
			case *types.TypeName:
				named, ok := obj.Type().(*types.Named)
				if !ok || !obj.Exported() {
					continue
				}
				mset := types.NewMethodSet(types.NewPointer(named))
				for m := range named.Methods() {
					if !m.Exported() || used[m.FullName()] || implicitlyUsed[m.Name()] ||
						slices.ContainsFunc(ifaceUsed[m.Name()], func(i *types.Interface) bool { return implements(mset, i) }) {
						continue
					}
					unused = append(unused, m.FullName())
				}
			}
		}
	}
	for _, u := range unused {
		t.Errorf("%s is exported but no non-test code of the module uses it: a test hook belongs in an export_test.go", strings.TrimPrefix(u, module+"/"))
	}
}

// implements reports whether a type of method set mset has every method
// of iface. It compares signatures as text, qualified by package path,
// because the packages of the module are type-checked from source one by
// one while their importers see them through export data: the same type
// is then two distinct types.Type values.
func implements(mset *types.MethodSet, iface *types.Interface) bool {
	for m := range iface.Methods() {
		sel := mset.Lookup(m.Pkg(), m.Name())
		if sel == nil || sigString(sel.Obj().Type()) != sigString(m.Type()) {
			return false
		}
	}
	return true
}

// sigString is a method's signature as text without its parameter names,
// which an interface may spell differently.
func sigString(t types.Type) string {
	sig := t.(*types.Signature)
	var b strings.Builder
	for _, tuple := range []*types.Tuple{sig.Params(), sig.Results()} {
		b.WriteString("(")
		for v := range tuple.Variables() {
			b.WriteString(types.TypeString(v.Type(), nil) + ",")
		}
		b.WriteString(")")
	}
	if sig.Variadic() {
		b.WriteString("...")
	}
	return b.String()
}

// exportPkg is what TestNoTestOnlyAPI needs of `go list -export -json`.
type exportPkg struct {
	ImportPath string
	Dir        string
	Export     string
	GoFiles    []string
	Module     *struct{ Path string }
}
