package main

import (
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pds-platform/pds/dataplane/internal/node"
)

// parseConfig reads flags; each flag's default comes from its environment variable when that is set.
// processFlags register the flags that configure the process rather than the node (see processConfig).
func parseConfig(args []string, getenv func(string) string, processFlags ...func(*flag.FlagSet)) (node.Config, error) {
	var cfg node.Config
	fs := flag.NewFlagSet("pds-dataplane", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	str := func(p *string, name, env, def, usage string) {
		if v := getenv(env); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, fmt.Sprintf("%s [%s]", usage, env))
	}
	str(&cfg.HTTPAddr, "http-addr", "PDS_HTTP_ADDR", "127.0.0.1:8081", "host:port for Connect, REST, WebSocket, health and metrics")
	str(&cfg.RaftAddr, "raft-addr", "PDS_RAFT_ADDR", "127.0.0.1:7001", "host:port of the raft transport")
	str(&cfg.NodeID, "node-id", "PDS_NODE_ID", "dp-1", "stable node id in the raft cluster")
	str(&cfg.ControlPlaneURL, "controlplane-url", "PDS_CONTROLPLANE_URL", "http://127.0.0.1:8080", "control plane base URL")
	str(&cfg.Broker, "broker", "PDS_BROKER", "embedded", "broker driver: embedded or pulsar")
	str(&cfg.DataDir, "data-dir", "PDS_DATA_DIR", "./data/dataplane", "directory of the embedded broker's data")
	str(&cfg.Pulsar.ServiceURL, "pulsar-url", "PDS_PULSAR_URL", "pulsar://127.0.0.1:6650", "Pulsar service URL (pulsar:// or pulsar+ssl://), for --broker pulsar")
	str(&cfg.Pulsar.AdminURL, "pulsar-admin-url", "PDS_PULSAR_ADMIN_URL", "http://127.0.0.1:8085", "Pulsar admin (web service) URL, for --broker pulsar")
	str(&cfg.Pulsar.AuthToken, "pulsar-auth-token", "PDS_PULSAR_AUTH_TOKEN", "", "Pulsar JWT auth token; empty means no authentication")
	var tokenFile string
	str(&tokenFile, "pulsar-auth-token-file", "PDS_PULSAR_AUTH_TOKEN_FILE", "", "file holding the Pulsar JWT auth token, which then stays out of the process list and the environment")
	str(&cfg.Pulsar.TLSTrustCertsFile, "pulsar-tls-trust-certs-file", "PDS_PULSAR_TLS_TRUST_CERTS_FILE", "", "PEM file of CAs trusted for Pulsar TLS; empty means the system roots")
	allowInsecure := false
	if v := getenv("PDS_PULSAR_TLS_ALLOW_INSECURE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return cfg, fmt.Errorf("PDS_PULSAR_TLS_ALLOW_INSECURE=%q: want true or false", v)
		}
		allowInsecure = b
	}
	fs.BoolVar(&cfg.Pulsar.TLSAllowInsecure, "pulsar-tls-allow-insecure", allowInsecure, "accept any Pulsar TLS certificate, for development only [PDS_PULSAR_TLS_ALLOW_INSECURE]")

	ackDeadline := 30 * time.Second
	if v := getenv("PDS_ACK_DEADLINE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return cfg, fmt.Errorf("PDS_ACK_DEADLINE=%q: %w", v, err)
		}
		ackDeadline = d
	}
	fs.DurationVar(&cfg.AckDeadline, "ack-deadline", ackDeadline, "redeliver events not acknowledged within this [PDS_ACK_DEADLINE]")
	maxInFlight := 1000
	if v := getenv("PDS_MAX_IN_FLIGHT"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return cfg, fmt.Errorf("PDS_MAX_IN_FLIGHT=%q: %w", v, err)
		}
		maxInFlight = n
	}
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", maxInFlight, "default unacknowledged events per stream [PDS_MAX_IN_FLIGHT]")

	for _, register := range processFlags {
		register(fs)
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fs.SetOutput(nil)
			fs.PrintDefaults()
		}
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if tokenFile != "" {
		if cfg.Pulsar.AuthToken != "" {
			return cfg, fmt.Errorf("--pulsar-auth-token and --pulsar-auth-token-file are both set; keep one")
		}
		token, err := os.ReadFile(tokenFile)
		if err != nil {
			return cfg, fmt.Errorf("--pulsar-auth-token-file: %w", err)
		}
		if cfg.Pulsar.AuthToken = strings.TrimSpace(string(token)); cfg.Pulsar.AuthToken == "" {
			return cfg, fmt.Errorf("--pulsar-auth-token-file: %s is empty", tokenFile)
		}
	}
	// A token pasted or read from a file often ends in a newline, which the broker would refuse.
	cfg.Pulsar.AuthToken = strings.TrimSpace(cfg.Pulsar.AuthToken)
	if err := validateBroker(cfg); err != nil {
		return cfg, err
	}
	if cfg.AckDeadline <= 0 {
		return cfg, fmt.Errorf("--ack-deadline must be positive (got %s)", cfg.AckDeadline)
	}
	if cfg.MaxInFlight < 1 || cfg.MaxInFlight > 10000 {
		return cfg, fmt.Errorf("--max-in-flight must be 1 to 10000 (got %d)", cfg.MaxInFlight)
	}
	return cfg, nil
}

// validateBroker checks the broker flags, naming the flag at fault.
func validateBroker(cfg node.Config) error {
	switch cfg.Broker {
	case "embedded":
		return nil
	case "pulsar":
	default:
		return fmt.Errorf("--broker must be embedded or pulsar (got %q)", cfg.Broker)
	}
	urls := []struct {
		flag, value string
		schemes     []string
	}{
		{"--pulsar-url", cfg.Pulsar.ServiceURL, []string{"pulsar", "pulsar+ssl"}},
		{"--pulsar-admin-url", cfg.Pulsar.AdminURL, []string{"http", "https"}},
	}
	for _, u := range urls {
		parsed, err := url.Parse(u.value)
		if err != nil || parsed.Host == "" || !slices.Contains(u.schemes, parsed.Scheme) {
			return fmt.Errorf("%s must be a %s URL with a host (got %q)", u.flag, strings.Join(u.schemes, ":// or ")+"://", u.value)
		}
	}
	if f := cfg.Pulsar.TLSTrustCertsFile; f != "" {
		pem, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("--pulsar-tls-trust-certs-file: %w", err)
		}
		// The admin client ignores a file it cannot parse and then trusts nothing, which would show up
		// as "certificate signed by unknown authority" rather than as this file's fault.
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("--pulsar-tls-trust-certs-file: %s holds no PEM certificate", f)
		}
	}
	return nil
}
