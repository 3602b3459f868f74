package engine_test

import (
	"errors"
	"io/fs"
	"os"
	"testing"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/engine"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/systemtest"
)

func TestEachSubscriptionReceivesExactlyItsEvents(t *testing.T) {
	dataDir := t.TempDir()
	systemtest.Check(t, engine.New(engine.Options{DataDir: dataDir}), systemtest.Options{
		AfterCleanup: func(t *testing.T, _ loadgen.Topology) {
			entries, err := os.ReadDir(dataDir)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			for _, e := range entries {
				t.Errorf("Cleanup left %s in the data directory", e.Name())
			}
		},
	})
}

// BenchmarkThroughput is run by hand, with a fixed count:
//
//	go test -run '^$' -bench Throughput -benchtime 200000x ./internal/loadgen/engine
func BenchmarkThroughput(b *testing.B) {
	systemtest.Throughput(b, engine.New(engine.Options{DataDir: b.TempDir()}))
}
