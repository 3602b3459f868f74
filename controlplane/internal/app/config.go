package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

// Config is the control plane's process configuration. Every field has a flag and an environment
// variable; a flag given on the command line wins over the variable, which wins over the default.
type Config struct {
	// HTTPAddr serves the Connect admin API, /healthz, /readyz and /metrics. Default 127.0.0.1:8080.
	HTTPAddr string
	// RaftAddr is the raft transport's listen address. Default 127.0.0.1:7000.
	RaftAddr string
	// RaftAdvertiseAddr is the address other raft nodes dial; empty means RaftAddr.
	RaftAdvertiseAddr string
	// NodeID is this voter's stable raft id. Default cp-1.
	NodeID string
	// DataDir holds the raft log and snapshots (under DataDir/raft). Default ./data/controlplane.
	DataDir string
	// DatabaseURL is the PostgreSQL URL; required. Migrations are applied at start.
	DatabaseURL string
	// ShutdownTimeout bounds the graceful shutdown after SIGINT/SIGTERM. Default 15 s.
	ShutdownTimeout time.Duration
}

// ParseConfig reads flags from args with defaults taken from the environment through getenv.
// It returns flag.ErrHelp when -h or --help was given (usage is written to output).
func ParseConfig(args []string, getenv func(string) string, output io.Writer) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("pds-controlplane", flag.ContinueOnError)
	fs.SetOutput(output)
	env := func(name, fallback string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return fallback
	}
	fs.StringVar(&cfg.HTTPAddr, "http-addr", env("PDS_HTTP_ADDR", "127.0.0.1:8080"), "HTTP listen address for the admin API, health and metrics [PDS_HTTP_ADDR]")
	fs.StringVar(&cfg.RaftAddr, "raft-addr", env("PDS_RAFT_ADDR", "127.0.0.1:7000"), "raft transport listen address [PDS_RAFT_ADDR]")
	fs.StringVar(&cfg.RaftAdvertiseAddr, "raft-advertise-addr", env("PDS_RAFT_ADVERTISE_ADDR", ""), "raft address other nodes dial; empty means --raft-addr [PDS_RAFT_ADVERTISE_ADDR]")
	fs.StringVar(&cfg.NodeID, "node-id", env("PDS_NODE_ID", "cp-1"), "stable raft node id [PDS_NODE_ID]")
	fs.StringVar(&cfg.DataDir, "data-dir", env("PDS_DATA_DIR", "./data/controlplane"), "directory for the raft log and snapshots [PDS_DATA_DIR]")
	fs.StringVar(&cfg.DatabaseURL, "database-url", env("PDS_DATABASE_URL", ""), "PostgreSQL URL, required; migrations are applied at start [PDS_DATABASE_URL]")
	shutdown := env("PDS_SHUTDOWN_TIMEOUT", "15s")
	fs.StringVar(&shutdown, "shutdown-timeout", shutdown, "graceful shutdown limit [PDS_SHUTDOWN_TIMEOUT]")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	d, err := time.ParseDuration(shutdown)
	if err != nil || d <= 0 {
		return Config{}, fmt.Errorf("--shutdown-timeout %q: want a positive duration such as 15s", shutdown)
	}
	cfg.ShutdownTimeout = d
	var missing []error
	for name, v := range map[string]string{"--database-url (PDS_DATABASE_URL)": cfg.DatabaseURL, "--http-addr": cfg.HTTPAddr,
		"--raft-addr": cfg.RaftAddr, "--node-id": cfg.NodeID, "--data-dir": cfg.DataDir} {
		if v == "" {
			missing = append(missing, fmt.Errorf("%s is required", name))
		}
	}
	return cfg, errors.Join(missing...)
}
