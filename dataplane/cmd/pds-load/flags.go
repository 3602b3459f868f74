package main

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/pdssys"
)

// config is pds-load's command line.
type config struct {
	scenario loadgen.Scenario
	systems  []string
	// name is the report name of system "pds" (e.g. pds-embedded, pds-pulsar).
	name string
	// rates are the offered loads in events/s, one run each, in order.
	rates []float64
	// stopWhenSaturated skips a system's remaining rates after a run it did not keep up with.
	stopWhenSaturated bool
	duration          time.Duration
	warmup            time.Duration
	drainTimeout      time.Duration
	publishers        int
	batch             int
	linger            time.Duration
	progress          time.Duration
	// out is the file each run's Result is appended to as one JSON line; empty means none.
	out string
	// cpuProfile, when set, receives a CPU profile of pds-load itself (the load tool's own cost).
	cpuProfile string
	// summary, when set, is a file of results (JSON lines) to print as a table instead of running anything.
	summary string
	// saturatedCheck, when set, is a file of results whose last run is judged instead of running anything.
	saturatedCheck string
	// fsyncProbeDir, when set, is a directory whose disk's fsync latency is measured instead of running anything.
	fsyncProbeDir string

	controlPlaneURL, dataPlaneURL string
	pdsStreamsPerConn             int
	pdsAckInterval                time.Duration
	pdsMaxInFlight                int
	pdsFullDecode                 bool
	pulsarURL, pulsarAdminURL     string
	centrifugoAPIURL              string
	centrifugoAPIKey              string
	centrifugoWSURL               string
	engineDataDir                 string
	// pids are the server processes to measure, by name (--pid name=pid).
	pids map[string]int
}

// systemKinds are the values of --system.
var systemKinds = []string{"pds", "engine", "pulsar-raw", "pulsar-ws", "centrifugo"}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := config{pids: map[string]int{}}
	fs := flag.NewFlagSet("pds-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "route", "scenario: "+strings.Join(loadgen.ScenarioNames(), ", "))
	systems := fs.String("system", "pds", "comma-separated systems to run, each at every rate: "+strings.Join(systemKinds, ", "))
	fs.StringVar(&cfg.name, "name", "pds", "name of system pds in the report, e.g. pds-embedded or pds-pulsar")
	rates := fs.String("rates", "10000", "comma-separated offered rates in events/s; one run per rate, in order")
	fs.BoolVar(&cfg.stopWhenSaturated, "stop-when-saturated", true, "skip a system's remaining rates after a run it did not keep up with (publishers behind, deliveries missing after the drain, or P99 over 5s)")
	fs.DurationVar(&cfg.duration, "duration", 30*time.Second, "how long each run publishes")
	fs.DurationVar(&cfg.warmup, "warmup", 0, "leave the latencies of events due in each run's first WARMUP out (their loss still counts)")
	fs.DurationVar(&cfg.drainTimeout, "drain-timeout", loadgen.DefaultDrainTimeout, "after publishing, how long to wait for missing deliveries")
	fs.IntVar(&cfg.publishers, "publishers", loadgen.DefaultPublishers, "concurrent publishers")
	fs.IntVar(&cfg.batch, "batch", loadgen.DefaultMaxBatch, "most events per Publish call (PDS takes at most 1000)")
	fs.DurationVar(&cfg.linger, "linger", 0, "let a publisher wait until the oldest due event waited this long (or --batch are due), like a producer's batching delay; 0 publishes at once")
	fs.DurationVar(&cfg.progress, "progress-interval", loadgen.DefaultProgressInterval, "interval between progress lines on stderr")
	fs.StringVar(&cfg.out, "out", "", "append each run's result to this file as one JSON object per line")
	fs.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of pds-load itself to this file")
	fs.StringVar(&cfg.summary, "summary", "", "print the table of the results in this file (as --out writes them) and exit; runs nothing")
	fs.StringVar(&cfg.saturatedCheck, "saturated", "", "print \"saturated: WHY\" or \"kept up\" for the last run in this file (as --out writes them) and exit; runs nothing")
	fs.StringVar(&cfg.fsyncProbeDir, "fsync-probe", "", "print how long an 8 KiB append plus fsync takes in this directory (1,000 samples, 2 ms apart) and exit; runs nothing")
	fs.StringVar(&cfg.controlPlaneURL, "controlplane-url", "http://127.0.0.1:8080", "PDS control plane base URL (pds)")
	fs.StringVar(&cfg.dataPlaneURL, "dataplane-url", "http://127.0.0.1:8081", "PDS data plane base URL (pds)")
	fs.IntVar(&cfg.pdsStreamsPerConn, "pds-streams-per-connection", pdssys.DefaultStreamsPerConnection, "subscriber streams sharing one HTTP/2 connection (pds)")
	fs.DurationVar(&cfg.pdsAckInterval, "pds-ack-interval", pdssys.DefaultAckInterval, "longest an acknowledgement waits to be batched (pds)")
	fs.IntVar(&cfg.pdsMaxInFlight, "pds-max-in-flight", pdssys.DefaultMaxInFlight, "max_in_flight of streams whose scenario sets none (pds)")
	fs.BoolVar(&cfg.pdsFullDecode, "pds-full-decode", false, "decode every delivered event completely instead of only its ids (pds)")
	fs.StringVar(&cfg.pulsarURL, "pulsar-url", "pulsar://127.0.0.1:6650", "Pulsar service URL (pulsar-raw, pulsar-ws)")
	fs.StringVar(&cfg.pulsarAdminURL, "pulsar-admin-url", "http://127.0.0.1:8085", "Pulsar admin/web service URL, also serving its WebSocket API (pulsar-raw, pulsar-ws)")
	fs.StringVar(&cfg.centrifugoAPIURL, "centrifugo-api-url", "", "Centrifugo HTTP API URL, e.g. http://127.0.0.1:8000/api (centrifugo)")
	fs.StringVar(&cfg.centrifugoAPIKey, "centrifugo-api-key", "", "Centrifugo HTTP API key (centrifugo)")
	fs.StringVar(&cfg.centrifugoWSURL, "centrifugo-ws-url", "", "Centrifugo WebSocket URL, e.g. ws://127.0.0.1:8000/connection/websocket (centrifugo)")
	fs.StringVar(&cfg.engineDataDir, "engine-data-dir", "", "directory for the engine-alone baseline's files; empty means a temporary one (engine)")
	fs.Func("pid", "a server process to measure, as name=pid (repeatable), e.g. dataplane=1234", func(v string) error {
		name, pidText, ok := strings.Cut(v, "=")
		pid, err := strconv.Atoi(pidText)
		if !ok || name == "" || err != nil || pid <= 0 {
			return fmt.Errorf("want name=pid with a positive pid, got %q", v)
		}
		cfg.pids[name] = pid
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	if cfg.summary != "" || cfg.saturatedCheck != "" {
		return cfg, nil
	}
	sc, ok := loadgen.Scenarios[*scenario]
	if !ok {
		return cfg, fmt.Errorf("--scenario must be one of %s (got %q)", strings.Join(loadgen.ScenarioNames(), ", "), *scenario)
	}
	cfg.scenario = sc
	for _, s := range strings.Split(*systems, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains(systemKinds, s) {
			return cfg, fmt.Errorf("--system: %q is not one of %s", s, strings.Join(systemKinds, ", "))
		}
		cfg.systems = append(cfg.systems, s)
	}
	for _, r := range strings.Split(*rates, ",") {
		rate, err := strconv.ParseFloat(strings.TrimSpace(r), 64)
		if err != nil || rate <= 0 {
			return cfg, fmt.Errorf("--rates: %q is not a positive number of events per second", r)
		}
		cfg.rates = append(cfg.rates, rate)
	}
	switch {
	case cfg.duration <= 0:
		return cfg, fmt.Errorf("--duration must be positive (got %v)", cfg.duration)
	case cfg.warmup < 0 || cfg.warmup >= cfg.duration:
		return cfg, fmt.Errorf("--warmup must be from 0 to less than --duration %v (got %v)", cfg.duration, cfg.warmup)
	case cfg.drainTimeout <= 0:
		return cfg, fmt.Errorf("--drain-timeout must be positive (got %v)", cfg.drainTimeout)
	case cfg.publishers < 1 || cfg.publishers > 256:
		return cfg, fmt.Errorf("--publishers must be 1 to 256 (got %d)", cfg.publishers)
	case cfg.batch < 1 || cfg.batch > 1000:
		return cfg, fmt.Errorf("--batch must be 1 to 1000 (got %d)", cfg.batch)
	case cfg.linger < 0 || cfg.linger >= cfg.duration:
		return cfg, fmt.Errorf("--linger must be from 0 to less than --duration (got %v)", cfg.linger)
	case cfg.progress <= 0:
		return cfg, fmt.Errorf("--progress-interval must be positive (got %v)", cfg.progress)
	case cfg.pdsStreamsPerConn < 1:
		return cfg, fmt.Errorf("--pds-streams-per-connection must be at least 1 (got %d)", cfg.pdsStreamsPerConn)
	case cfg.pdsAckInterval <= 0:
		return cfg, fmt.Errorf("--pds-ack-interval must be positive (got %v)", cfg.pdsAckInterval)
	case cfg.pdsMaxInFlight < 1 || cfg.pdsMaxInFlight > 10000:
		return cfg, fmt.Errorf("--pds-max-in-flight must be 1 to 10000 (got %d)", cfg.pdsMaxInFlight)
	}
	if slices.Contains(cfg.systems, "centrifugo") && (cfg.centrifugoAPIURL == "" || cfg.centrifugoAPIKey == "" || cfg.centrifugoWSURL == "") {
		return cfg, fmt.Errorf("--system centrifugo needs --centrifugo-api-url, --centrifugo-api-key and --centrifugo-ws-url")
	}
	return cfg, nil
}

// processes returns a copy of the --pid processes.
func (c config) processes() map[string]int { return maps.Clone(c.pids) }
