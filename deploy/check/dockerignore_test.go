package check

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// Dockerfile.dockerignore keeps out of the build context nothing that
// `go build ./cmd/presenced` needs: go.mod and go.sum, and every Go and
// embedded file of every package of the module the command imports
// (CGO_ENABLED=0 GOOS=linux, as the Dockerfile builds). Matched as
// BuildKit does, with moby/patternmatcher (its ignorefile reader too).
func TestDockerignoreKeepsTheBuildInputs(t *testing.T) {
	const root = "../.."
	f, err := os.Open("../Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatalf("Dockerfile.dockerignore: %v", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf("Dockerfile.dockerignore: %v", err)
	}

	cmd := exec.Command("go", "list", "-deps", "-f",
		`{{if and (not .Standard) (eq .Module.Path "github.com/presenced/presenced")}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}`, "./cmd/presenced")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/presenced: %v", err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"go.mod", "go.sum"}
	for _, p := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(abs, p)
		if err != nil || strings.HasPrefix(rel, "..") {
			t.Fatalf("%s is outside the repository", p)
		}
		files = append(files, filepath.ToSlash(rel))
	}
	if len(files) < 10 {
		t.Fatalf("go list found only %v: the check would be vacuous", files)
	}
	for _, f := range files {
		excluded, err := pm.MatchesOrParentMatches(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if excluded {
			t.Errorf("Dockerfile.dockerignore excludes %s, which the image's go build needs", f)
		}
	}
	t.Logf("%d files of the build kept in the context by %d patterns", len(files), len(patterns))
}
