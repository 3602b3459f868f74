package loadgen

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// FsyncLatency is how long an append plus fsync took on a disk, at the percentiles that bound a durable
// write's share of a publish's latency.
type FsyncLatency struct {
	Samples                  int
	P50, P90, P99, P999, Max time.Duration
}

func (f FsyncLatency) String() string {
	return fmt.Sprintf("p50 %v, p90 %v, p99 %v, p99.9 %v, max %v (%d samples)",
		f.P50.Round(time.Microsecond), f.P90.Round(time.Microsecond), f.P99.Round(time.Microsecond),
		f.P999.Round(time.Microsecond), f.Max.Round(time.Microsecond), f.Samples)
}

// fsyncProbeBlock is the size of one probe write, about one batch of a few dozen events.
const fsyncProbeBlock = 8 << 10

// ProbeFsync appends fsyncProbeBlock bytes to a temporary file in dir and fsyncs it, samples times with pause
// between, and returns the latencies. The pause keeps the probe from measuring its own queue.
func ProbeFsync(dir string, samples int, pause time.Duration) (FsyncLatency, error) {
	if samples < 1 {
		return FsyncLatency{}, errors.New("fsync probe: samples must be at least 1")
	}
	f, err := os.CreateTemp(dir, "pds-fsync-probe-*")
	if err != nil {
		return FsyncLatency{}, fmt.Errorf("fsync probe: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	block := make([]byte, fsyncProbeBlock)
	took := make([]time.Duration, 0, samples)
	for range samples {
		start := time.Now()
		if _, err := f.Write(block); err != nil {
			return FsyncLatency{}, fmt.Errorf("fsync probe: write: %w", err)
		}
		if err := f.Sync(); err != nil {
			return FsyncLatency{}, fmt.Errorf("fsync probe: sync: %w", err)
		}
		took = append(took, time.Since(start))
		time.Sleep(pause)
	}
	slices.Sort(took)
	at := func(q float64) time.Duration { return took[min(int(q*float64(len(took))), len(took)-1)] }
	return FsyncLatency{Samples: len(took), P50: at(0.5), P90: at(0.9), P99: at(0.99), P999: at(0.999), Max: took[len(took)-1]}, nil
}
