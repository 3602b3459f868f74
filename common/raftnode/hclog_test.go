package raftnode

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func decodeLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, rec)
	}
	return out
}

func TestRaftLogLinesBelowLevelAreDropped(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := newHCLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), hclog.Warn)
	l.Info("entering follower state")
	l.Named("transport").Warn("slow peer", "peer", "dp-1")
	lines := decodeLines(t, &buf)
	if len(lines) != 1 {
		t.Fatalf("got %d lines %v, want only the warning", len(lines), lines)
	}
	if lines[0]["msg"] != "slow peer" || lines[0]["peer"] != "dp-1" || lines[0]["logger"] != "transport" || lines[0]["level"] != "WARN" {
		t.Fatalf("warning rendered as %v", lines[0])
	}
}

func TestRepeatedRaftLinesAreThrottledWithACount(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := newHCLogger(slog.New(slog.NewJSONHandler(&buf, nil)), hclog.Warn)
	now := time.Unix(0, 0)
	l.limiter.now = func() time.Time { return now }
	for range 5 {
		l.Error("failed to heartbeat to", "peer", "127.0.0.1:7001")
	}
	now = now.Add(repeatInterval)
	l.Error("failed to heartbeat to", "peer", "127.0.0.1:7001")
	lines := decodeLines(t, &buf)
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want the first and one after the interval: %v", len(lines), lines)
	}
	if lines[1]["repeated"] != float64(4) {
		t.Fatalf("second line %v should report 4 repeated lines", lines[1])
	}
}
