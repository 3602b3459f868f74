package main_test

import (
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pds-platform/pds/common/freeport"
	"github.com/pds-platform/pds/common/syncbuf"
	"github.com/pds-platform/pds/db/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const waitLimit = 60 * time.Second

// binary builds pds-controlplane into the test's temporary directory (the Go build cache keeps repeat
// builds fast).
func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped under -short")
	}
	bin := filepath.Join(t.TempDir(), "pds-controlplane")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build pds-controlplane: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return addr
}

func TestSIGTERMShutsDownGracefully(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	httpAddr := freeAddr(t)
	cmd := exec.Command(bin, "--http-addr", httpAddr, "--raft-addr", freeAddr(t), "--data-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "PDS_DATABASE_URL="+pgtest.NewDatabase(t))
	var logs syncbuf.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("pds-controlplane log:\n%s", logs.String())
		}
	})

	deadline := time.Now().Add(waitLimit)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("pds-controlplane exited before becoming ready: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pds-controlplane not ready within %s", waitLimit)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("send SIGTERM: %v", err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("pds-controlplane still running %s after SIGTERM", waitLimit)
	}
	if !strings.Contains(logs.String(), `"service":"pds-controlplane"`) {
		t.Fatalf("logs are not JSON records naming the service:\n%s", logs.String())
	}
}

func TestMissingDatabaseURLExitsWithUsageError(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(binary(t))
	cmd.Env = append(os.Environ(), "PDS_DATABASE_URL=")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("exit: %v, want status 2; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), "--database-url") {
		t.Fatalf("output does not name the missing --database-url:\n%s", out)
	}
}
