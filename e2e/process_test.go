package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pds-platform/pds/common/freeport"
	"github.com/pds-platform/pds/common/syncbuf"
)

// readyTimeout bounds how long a process may take to answer /readyz with 200.
const readyTimeout = 60 * time.Second

// stopTimeout bounds a graceful stop before the process is killed.
const stopTimeout = 15 * time.Second

// process is a PDS binary running as a child of the test. Its output is kept and logged when the test fails;
// t.Cleanup stops it.
type process struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	// exited is closed once the process has exited and err holds what Wait returned.
	exited chan struct{}
	err    error
}

// startProcess starts binary with args. When the test ends a process still running is stopped with SIGTERM
// and must exit cleanly; its logs are written to t.Logf when the test fails; a data race reported by a -race
// build fails the test.
func startProcess(t *testing.T, name, binary string, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, out: &syncbuf.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.Env = append(p.cmd.Environ(), "PDS_LOG_LEVEL=info")
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if p.running() {
			if err := p.stop(); err != nil {
				t.Errorf("%s exited with %v after SIGTERM, want a clean exit", name, err)
			}
		}
		logs := p.out.String()
		if strings.Contains(logs, "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			t.Logf("--- logs of %s (%s) ---\n%s", name, strings.Join(args, " "), logs)
		}
	})
	return p
}

func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop asks the process to shut down (SIGTERM) and kills it when it has not exited within stopTimeout.
// It returns what the process's Wait returned.
func (p *process) stop() error {
	if p.running() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(stopTimeout):
			p.t.Errorf("%s did not stop within %v of SIGTERM; killing it", p.name, stopTimeout)
			_ = p.cmd.Process.Kill()
			<-p.exited
		}
	}
	return p.err
}

// kill ends the process with SIGKILL, as a crash would, and waits until it is gone.
func (p *process) kill() {
	if p.running() {
		_ = p.cmd.Process.Kill()
	}
	<-p.exited
}

// waitReady polls baseURL/readyz until it answers 200 and returns the config version it reports. It fails
// the test when the process exits first or readyTimeout passes.
func (p *process) waitReady(baseURL string) uint64 {
	p.t.Helper()
	deadline := time.Now().Add(readyTimeout)
	var last string
	for {
		version, ready, detail := readiness(baseURL)
		if ready {
			return version
		}
		last = detail
		if !p.running() {
			p.t.Fatalf("%s exited before it was ready (%v); last /readyz: %s", p.name, p.err, last)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s not ready within %v; last /readyz: %s", p.name, readyTimeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitConfigVersion polls baseURL/readyz until the node's config version reaches want, e.g. the version an
// admin write returned, so the node knows the topic or subscription that write created.
func (p *process) waitConfigVersion(baseURL string, want uint64) {
	p.t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		version, _, detail := readiness(baseURL)
		if version >= want {
			return
		}
		if !p.running() {
			p.t.Fatalf("%s exited while waiting for config version %d (%v)", p.name, want, p.err)
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not reach config version %d within %v; last /readyz: %s", p.name, want, readyTimeout, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readiness reads baseURL/readyz: the config version, whether the node is ready, and a description of the
// answer for failure messages.
func readiness(baseURL string) (version uint64, ready bool, detail string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/readyz", nil)
	if err != nil {
		return 0, false, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, err.Error()
	}
	defer resp.Body.Close()
	var body struct {
		Ready         bool   `json:"ready"`
		ConfigVersion uint64 `json:"config_version"`
		Reason        string `json:"reason"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, false, fmt.Sprintf("HTTP %d, undecodable body: %v", resp.StatusCode, err)
	}
	detail = fmt.Sprintf("HTTP %d ready=%v config_version=%d reason=%q", resp.StatusCode, body.Ready, body.ConfigVersion, body.Reason)
	return body.ConfigVersion, resp.StatusCode == http.StatusOK && body.Ready, detail
}

// freeAddr returns a loopback address with a port nobody listens on right now (freeport.Addr).
func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return addr
}
