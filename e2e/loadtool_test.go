package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// loadResult is the part of pds-load's JSON result (dataplane/internal/loadgen.Result) the test checks.
type loadResult struct {
	System        string  `json:"system"`
	Scenario      string  `json:"scenario"`
	Published     uint64  `json:"published"`
	PublishErrors uint64  `json:"publish_errors"`
	PublishError  string  `json:"publish_error"`
	Expected      uint64  `json:"expected"`
	Delivered     uint64  `json:"delivered"`
	Duplicates    uint64  `json:"duplicated"`
	Lost          uint64  `json:"lost"`
	Complete      bool    `json:"complete"`
	CloseError    string  `json:"close_error"`
	CleanupError  string  `json:"cleanup_error"`
	DeliveredRate float64 `json:"delivered_per_second"`
	Latency       struct {
		Count int64   `json:"count"`
		P50   float64 `json:"p50"`
		P99   float64 `json:"p99"`
		Max   float64 `json:"max"`
	} `json:"latency_ms"`
	Processes []struct {
		Name       string  `json:"name"`
		CPUSeconds float64 `json:"cpu_seconds"`
		PeakRSSMiB float64 `json:"peak_rss_mib"`
		Error      string  `json:"error"`
	} `json:"processes"`
}

// buildLoadTool builds pds-load into a directory of the test.
func buildLoadTool(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, "github.com/pds-platform/pds/dataplane/cmd/pds-load")...)
	build.Dir = root
	build.Env = append(os.Environ(), "GOWORK="+filepath.Join(root, "go.work"))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build pds-load: %v\n%s", err, out)
	}
	return filepath.Join(dir, "pds-load")
}

// The load tool, run as a user runs it against a real control plane and data plane, publishes at a fixed rate
// and accounts for every event: all delivered once, none lost, latencies and resource use measured.
func TestLoadToolSmokeRunAgainstPDS(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("end-to-end test: starts PostgreSQL and PDS processes")
	}
	loadTool := buildLoadTool(t)
	c := startCluster(t)
	out := filepath.Join(t.TempDir(), "results.jsonl")
	const rate, seconds = 200, 3
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, loadTool,
		"--scenario", "smoke", "--system", "pds", "--name", "pds-e2e",
		"--rates", strconv.Itoa(rate), "--duration", fmt.Sprintf("%ds", seconds), "--drain-timeout", "30s",
		"--controlplane-url", c.cpURL, "--dataplane-url", c.dpURL,
		"--pid", "dataplane="+strconv.Itoa(c.dataPlane.cmd.Process.Pid),
		"--out", out)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pds-load: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	t.Logf("pds-load table:\n%s", stdout.String())

	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("read pds-load's --out file: %v", err)
	}
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	if len(lines) != 1 {
		t.Fatalf("--out holds %d results, want 1 (one rate):\n%s", len(lines), data)
	}
	var res loadResult
	if err := json.Unmarshal(lines[0], &res); err != nil {
		t.Fatalf("decode result: %v\n%s", err, lines[0])
	}

	if res.System != "pds-e2e" || res.Scenario != "smoke" {
		t.Errorf("result names system %q scenario %q, want pds-e2e and smoke", res.System, res.Scenario)
	}
	if res.Published != rate*seconds || res.PublishErrors != 0 {
		t.Errorf("published %d with %d errors (%s), want %d and none", res.Published, res.PublishErrors, res.PublishError, rate*seconds)
	}
	if res.Expected == 0 || res.Delivered != res.Expected || res.Lost != 0 || !res.Complete {
		t.Errorf("expected %d deliveries, delivered %d, lost %d, complete %v: want every expected delivery",
			res.Expected, res.Delivered, res.Lost, res.Complete)
	}
	if res.CloseError != "" || res.CleanupError != "" {
		t.Errorf("close error %q, cleanup error %q: want none", res.CloseError, res.CleanupError)
	}
	lat := res.Latency
	if lat.Count != int64(res.Delivered) || lat.P50 <= 0 || lat.P50 > lat.P99 || lat.P99 > lat.Max || lat.Max > 10_000 {
		t.Errorf("latency %+v over %d deliveries: want one sample per delivery, 0 < p50 ≤ p99 ≤ max ≤ 10 s", lat, res.Delivered)
	}
	measured := map[string]bool{}
	for _, p := range res.Processes {
		if p.Error == "" && p.CPUSeconds > 0 && p.PeakRSSMiB > 0 {
			measured[p.Name] = true
		}
	}
	if !measured["dataplane"] || !measured["pds-load"] {
		t.Errorf("processes %+v: want CPU time and peak memory of the data plane and of pds-load", res.Processes)
	}
}
