package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pds-platform/pds/dataplane/internal/node"
)

func TestParseConfig(t *testing.T) {
	t.Parallel()
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, httpAddr, cpURL string, ack time.Duration, maxInFlight int)
		wantErr bool
	}{
		{name: "defaults", check: func(t *testing.T, httpAddr, cpURL string, ack time.Duration, maxInFlight int) {
			if httpAddr != "127.0.0.1:8081" || cpURL != "http://127.0.0.1:8080" || ack != 30*time.Second || maxInFlight != 1000 {
				t.Fatalf("defaults %s %s %s %d", httpAddr, cpURL, ack, maxInFlight)
			}
		}},
		{name: "environment", env: map[string]string{"PDS_HTTP_ADDR": "0.0.0.0:9000", "PDS_ACK_DEADLINE": "5s", "PDS_MAX_IN_FLIGHT": "50"},
			check: func(t *testing.T, httpAddr, _ string, ack time.Duration, maxInFlight int) {
				if httpAddr != "0.0.0.0:9000" || ack != 5*time.Second || maxInFlight != 50 {
					t.Fatalf("from env: %s %s %d", httpAddr, ack, maxInFlight)
				}
			}},
		{name: "flag beats environment", args: []string{"--http-addr", "127.0.0.1:1"}, env: map[string]string{"PDS_HTTP_ADDR": "127.0.0.1:2"},
			check: func(t *testing.T, httpAddr, _ string, _ time.Duration, _ int) {
				if httpAddr != "127.0.0.1:1" {
					t.Fatalf("http addr %s, want the flag's", httpAddr)
				}
			}},
		{name: "bad ack deadline in env", env: map[string]string{"PDS_ACK_DEADLINE": "soon"}, wantErr: true},
		{name: "max in flight over the limit", args: []string{"--max-in-flight", "10001"}, wantErr: true},
		{name: "stray argument", args: []string{"extra"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseConfig(tt.args, env(tt.env))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("parsed %+v, want an error", cfg)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			tt.check(t, cfg.HTTPAddr, cfg.ControlPlaneURL, cfg.AckDeadline, cfg.MaxInFlight)
		})
	}
}

func TestParseConfigBroker(t *testing.T) {
	t.Parallel()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, selfSignedCertPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(t.TempDir(), "ca.der")
	if err := os.WriteFile(notPEM, []byte("-----BEGIN CERTIFICATE-----\ntruncated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "pulsar.token")
	if err := os.WriteFile(tokenFile, []byte("eyJfromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyTokenFile := filepath.Join(t.TempDir(), "empty.token")
	if err := os.WriteFile(emptyTokenFile, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(cfg node.Config) bool
		// wantErr is a substring of the error, naming the flag at fault; empty means success.
		wantErr string
	}{
		{name: "embedded is the default", want: func(cfg node.Config) bool { return cfg.Broker == "embedded" }},
		{name: "pulsar with default URLs", args: []string{"--broker", "pulsar"}, want: func(cfg node.Config) bool {
			return cfg.Broker == "pulsar" && cfg.Pulsar == node.PulsarConfig{ServiceURL: "pulsar://127.0.0.1:6650", AdminURL: "http://127.0.0.1:8085"}
		}},
		{name: "pulsar from the environment", env: map[string]string{
			"PDS_BROKER": "pulsar", "PDS_PULSAR_URL": "pulsar+ssl://pulsar.example:6651", "PDS_PULSAR_ADMIN_URL": "https://pulsar.example:8443",
			"PDS_PULSAR_AUTH_TOKEN": "eyJtoken", "PDS_PULSAR_TLS_TRUST_CERTS_FILE": caFile, "PDS_PULSAR_TLS_ALLOW_INSECURE": "true",
		}, want: func(cfg node.Config) bool {
			return cfg.Pulsar == node.PulsarConfig{ServiceURL: "pulsar+ssl://pulsar.example:6651", AdminURL: "https://pulsar.example:8443",
				AuthToken: "eyJtoken", TLSTrustCertsFile: caFile, TLSAllowInsecure: true}
		}},
		{name: "allow-insecure flag", args: []string{"--broker", "pulsar", "--pulsar-tls-allow-insecure"}, want: func(cfg node.Config) bool { return cfg.Pulsar.TLSAllowInsecure }},
		{name: "unknown broker", args: []string{"--broker", "kafka"}, wantErr: "--broker"},
		{name: "service URL with the admin scheme", args: []string{"--broker", "pulsar", "--pulsar-url", "http://127.0.0.1:6650"}, wantErr: "--pulsar-url"},
		{name: "admin URL without a host", args: []string{"--broker", "pulsar", "--pulsar-admin-url", "127.0.0.1:8085"}, wantErr: "--pulsar-admin-url"},
		{name: "missing trust certs file", args: []string{"--broker", "pulsar", "--pulsar-tls-trust-certs-file", "/nonexistent/ca.pem"}, wantErr: "--pulsar-tls-trust-certs-file"},
		{name: "trust certs file without a PEM certificate", args: []string{"--broker", "pulsar", "--pulsar-tls-trust-certs-file", notPEM}, wantErr: "holds no PEM certificate"},
		{name: "bad allow-insecure in env", env: map[string]string{"PDS_PULSAR_TLS_ALLOW_INSECURE": "maybe"}, wantErr: "PDS_PULSAR_TLS_ALLOW_INSECURE"},
		{name: "token read from a file keeps no newline", env: map[string]string{"PDS_BROKER": "pulsar", "PDS_PULSAR_AUTH_TOKEN": "eyJtoken\n"},
			want: func(cfg node.Config) bool { return cfg.Pulsar.AuthToken == "eyJtoken" }},
		{name: "token file", args: []string{"--broker", "pulsar", "--pulsar-auth-token-file", tokenFile},
			want: func(cfg node.Config) bool { return cfg.Pulsar.AuthToken == "eyJfromfile" }},
		{name: "token file from the environment", env: map[string]string{"PDS_BROKER": "pulsar", "PDS_PULSAR_AUTH_TOKEN_FILE": tokenFile},
			want: func(cfg node.Config) bool { return cfg.Pulsar.AuthToken == "eyJfromfile" }},
		{name: "missing token file", args: []string{"--broker", "pulsar", "--pulsar-auth-token-file", "/nonexistent/pulsar.token"}, wantErr: "--pulsar-auth-token-file"},
		{name: "empty token file", args: []string{"--broker", "pulsar", "--pulsar-auth-token-file", emptyTokenFile}, wantErr: "is empty"},
		{name: "token and token file", args: []string{"--broker", "pulsar", "--pulsar-auth-token", "eyJ", "--pulsar-auth-token-file", tokenFile}, wantErr: "keep one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseConfig(tt.args, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parse %v: error %v, want one naming %s", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse %v: %v", tt.args, err)
			}
			if !tt.want(cfg) {
				t.Fatalf("parse %v: got broker %q, pulsar %+v", tt.args, cfg.Broker, cfg.Pulsar)
			}
		})
	}
}

// selfSignedCertPEM returns a PEM certificate, as a CA file holds.
func selfSignedCertPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: time.Now(),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
