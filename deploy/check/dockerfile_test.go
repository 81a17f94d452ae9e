package check

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// dockerStage is one FROM of a Dockerfile and the instructions after it.
type dockerStage struct {
	from  string
	lines []string // instructions, continuation lines joined
}

func parseDockerfile(t *testing.T, path string) []dockerStage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []dockerStage
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if rest, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(line)
		instr := cur.String()
		cur.Reset()
		if fields := strings.Fields(instr); len(fields) > 1 && strings.EqualFold(fields[0], "FROM") {
			stages = append(stages, dockerStage{from: fields[1]})
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("%s: %q before FROM", path, instr)
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, instr)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// The Dockerfile is not built here (no container engine): this checks
// what can be checked without one.
func TestDockerfile(t *testing.T) {
	const root = "../.."
	stages := parseDockerfile(t, "../Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(stages))
	}
	final := stages[len(stages)-1]
	if !strings.Contains(final.from, "distroless") && final.from != "scratch" {
		t.Errorf("runtime stage FROM %s: want distroless or scratch", final.from)
	}
	user := ""
	for _, l := range final.lines {
		if f := strings.Fields(l); strings.EqualFold(f[0], "USER") {
			user = f[1]
		}
	}
	if user == "" || user == "root" || strings.HasPrefix(user, "0") {
		t.Errorf("runtime stage runs as %q: want a non-root USER", user)
	}

	// Go in the build image is at least the go directive of go.mod.
	goMod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	if m := regexp.MustCompile(`^golang:(\d+\.\d+)`).FindStringSubmatch(stages[0].from); m == nil || want == nil || m[1] != string(want[1]) {
		t.Errorf("build stage FROM %s: want golang:%s (go.mod)", stages[0].from, want[1])
	}

	var build string
	for _, st := range stages[:len(stages)-1] {
		for _, l := range st.lines {
			f := strings.Fields(l)
			switch strings.ToUpper(f[0]) {
			case "COPY", "ADD":
				if strings.HasPrefix(f[1], "--from") {
					continue
				}
				for _, src := range f[1 : len(f)-1] {
					if _, err := os.Stat(filepath.Join(root, src)); err != nil {
						t.Errorf("%s: %v", l, err)
					}
				}
			case "RUN":
				if strings.Contains(l, "go build") {
					build = l
				}
			}
		}
	}
	if build == "" {
		t.Fatal("no RUN go build in the build stage")
	}
	if !strings.Contains(build, "CGO_ENABLED=0") {
		t.Errorf("%s: want CGO_ENABLED=0 (a static binary for distroless/static)", build)
	}
	pkg := regexp.MustCompile(`\./cmd/[a-z-]+`).FindString(build)
	if pkg == "" {
		t.Fatalf("%s: builds no ./cmd/ package", build)
	}
	for _, l := range final.lines {
		if f := strings.Fields(l); strings.EqualFold(f[0], "COPY") && strings.HasPrefix(f[1], "--from") {
			if !strings.Contains(build, "-o "+f[2]) {
				t.Errorf("%s: the build stage writes no %s", l, f[2])
			}
		}
	}

	// The build needs no cgo: with CGO_ENABLED=0 every package of the
	// command keeps its Go files (one made only of cgo files would be
	// left empty and fail). go list reads no more than the sources; a
	// build here would cost a cold compile of everything, in make test.
	cmd := exec.Command("go", "list", "-deps", "-e", "-f",
		"{{with .Error}}{{.}}\n{{end}}{{range .DepsErrors}}{{.}}\n{{end}}", pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	out, err := cmd.CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("CGO_ENABLED=0 go list -deps %s: %v\n%s", pkg, err, out)
	}
}
