package multinode

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// presencedBin is the presenced binary the tests run, built by TestMain.
// Set once before any test runs; read only.
var presencedBin string

// TestMain builds cmd/presenced once (with -race when this test binary has
// it), runs the tests, and checks that no goroutine leaked.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "presenced-multinode-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "multinode:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	presencedBin = filepath.Join(dir, "presenced")
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "multinode: the go command is needed to build presenced:", err)
		return 1
	}
	args := []string{"build", "-o", presencedBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command(goTool, append(args, "github.com/presenced/presenced/cmd/presenced")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "multinode: go build ./cmd/presenced:", err)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "multinode: goroutines leaked:", err)
			return 1
		}
	}
	return code
}
