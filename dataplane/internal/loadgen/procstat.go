package loadgen

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// rssSampleInterval is how often peak memory is sampled.
const rssSampleInterval = 250 * time.Millisecond

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat's CPU times: AT_CLKTCK from the process's
// auxiliary vector (what sysconf(_SC_CLK_TCK) returns), else 100, its value on every common Linux.
var clockTicks = sync.OnceValue(func() int64 {
	const atClkTck = 17
	auxv, err := os.ReadFile("/proc/self/auxv")
	if err == nil {
		for i := 0; i+16 <= len(auxv); i += 16 {
			key, value := binary.NativeEndian.Uint64(auxv[i:]), binary.NativeEndian.Uint64(auxv[i+8:])
			if key == atClkTck && value > 0 {
				return int64(value)
			}
		}
	}
	return 100
})

// cpuTicks reads a process's user plus system CPU time in clock ticks.
func cpuTicks(pid int) (int64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: the fields that follow start after the
	// last ')'. There, field 3 (state) is index 0, utime (14) index 11 and stime (15) index 12.
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := bytes.Fields(stat[end+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the command name, want at least 13", pid, len(fields))
	}
	utime, err1 := strconv.ParseInt(string(fields[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(fields[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q, stime %q", pid, fields[11], fields[12])
	}
	return utime + stime, nil
}

// rssKiB reads a process's resident set size (VmRSS) in KiB.
func rssKiB(pid int) (int64, error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(status) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		fields := bytes.Fields(rest)
		if len(fields) == 0 {
			break
		}
		return strconv.ParseInt(string(fields[0]), 10, 64)
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// processMeter measures processes' CPU time between start and stop and samples their peak RSS meanwhile.
type processMeter struct {
	procs []*meteredProcess
	stop  context.CancelFunc
	done  chan struct{}
}

type meteredProcess struct {
	name      string
	pid       int
	startTick int64
	err       error

	mu      sync.Mutex
	peakKiB int64
}

// startMeter starts measuring processes (name → pid). A process that cannot be read is reported with its
// error rather than failing the run.
func startMeter(processes map[string]int) *processMeter {
	ctx, cancel := context.WithCancel(context.Background())
	m := &processMeter{stop: cancel, done: make(chan struct{})}
	for name, pid := range processes {
		p := &meteredProcess{name: name, pid: pid}
		p.startTick, p.err = cpuTicks(pid)
		m.procs = append(m.procs, p)
	}
	m.sample()
	go func() {
		defer close(m.done)
		ticker := time.NewTicker(rssSampleInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				m.sample()
			}
		}
	}()
	return m
}

func (m *processMeter) sample() {
	for _, p := range m.procs {
		kib, err := rssKiB(p.pid)
		if err != nil {
			continue
		}
		p.mu.Lock()
		p.peakKiB = max(p.peakKiB, kib)
		p.mu.Unlock()
	}
}

// finish stops sampling and returns each process's CPU time since startMeter and its peak RSS, in no
// particular order; deliveries divides the CPU time into CPUMicrosPerDelivery.
func (m *processMeter) finish(deliveries uint64) []ProcessResult {
	m.sample()
	m.stop()
	<-m.done
	ticks := float64(clockTicks())
	out := make([]ProcessResult, 0, len(m.procs))
	for _, p := range m.procs {
		r := ProcessResult{Name: p.name, PID: p.pid}
		end, err := cpuTicks(p.pid)
		if p.err != nil {
			err = p.err
		}
		if err != nil {
			r.Error = err.Error()
		} else {
			r.CPUSeconds = float64(end-p.startTick) / ticks
			if deliveries > 0 {
				r.CPUMicrosPerDelivery = r.CPUSeconds * 1e6 / float64(deliveries)
			}
		}
		p.mu.Lock()
		r.PeakRSSMiB = float64(p.peakKiB) / 1024
		p.mu.Unlock()
		out = append(out, r)
	}
	return out
}
