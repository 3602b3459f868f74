package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pds-platform/pds/db/pgtest"
)

// binaries are the PDS binaries under test, built once per test process by TestMain.
var binaries struct {
	controlPlane, dataPlane string
}

func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		if err := buildBinaries(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	// Main runs the tests and stops the private PostgreSQL server, if one was started.
	pgtest.Main(m)
}

// buildBinaries builds the binaries into one directory per user under the system temp dir, replaced on every
// run: pgtest.Main exits the process, so a per-run directory could never be removed. Each binary is built
// beside its final name and renamed into place, so a concurrent test run keeps executing its own copy.
func buildBinaries() error {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("pds-e2e-bin-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("build binaries: %w", err)
	}
	staging, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return fmt.Errorf("build binaries: %w", err)
	}
	defer os.RemoveAll(staging)

	packages := map[string]*string{
		"github.com/pds-platform/pds/controlplane/cmd/pds-controlplane": &binaries.controlPlane,
		"github.com/pds-platform/pds/dataplane/cmd/pds-dataplane":       &binaries.dataPlane,
	}
	args := []string{"build", "-o", staging + string(filepath.Separator)}
	if raceEnabled {
		// A race in a real process fails its test like a race in the test itself.
		args = append(args, "-race")
	}
	for pkg := range packages {
		args = append(args, pkg)
	}
	build := exec.Command("go", args...)
	// The repository root holds go.work, which joins the modules the binaries live in.
	root, err := filepath.Abs("..")
	if err != nil {
		return fmt.Errorf("build binaries: %w", err)
	}
	build.Dir = root
	build.Env = append(os.Environ(), "GOWORK="+filepath.Join(root, "go.work"))
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build binaries (go %v): %w\n%s", args, err, out)
	}
	for pkg, path := range packages {
		name := filepath.Base(pkg)
		*path = filepath.Join(dir, name)
		if err := os.Rename(filepath.Join(staging, name), *path); err != nil {
			return fmt.Errorf("build binaries: %w", err)
		}
	}
	return nil
}
