package broker

import (
	"log/slog"
	"testing"

	"github.com/pds-platform/pds/common/syncbuf"
)

// logOnFailure returns a logger whose records the test prints only if it fails: the driver's warnings
// (a consumer replaced, a reconnect) explain a failure that otherwise shows only as records missing.
// Register it before the broker's Close, so the records of the close are kept too.
func logOnFailure(t testing.TB) *slog.Logger {
	t.Helper()
	buf := &syncbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
