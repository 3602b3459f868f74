package loadgen

import (
	"os"
	"testing"
	"time"
)

func TestProbeFsyncReportsOrderedLatenciesAndLeavesNoFile(t *testing.T) {
	dir := t.TempDir()
	got, err := ProbeFsync(dir, 20, 0)
	if err != nil {
		t.Fatalf("ProbeFsync: %v", err)
	}
	if got.Samples != 20 || got.P50 <= 0 || got.P50 > got.P90 || got.P90 > got.P99 || got.P99 > got.P999 || got.P999 > got.Max {
		t.Errorf("ProbeFsync = %+v; want 20 samples with 0 < p50 <= p90 <= p99 <= p99.9 <= max", got)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the probe left %d files in %s", len(entries), dir)
	}
	if _, err := ProbeFsync(dir, 0, time.Millisecond); err == nil {
		t.Error("ProbeFsync with 0 samples: no error")
	}
	if _, err := ProbeFsync(dir+"/missing", 1, 0); err == nil {
		t.Error("ProbeFsync in a missing directory: no error")
	}
}
