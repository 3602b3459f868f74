package broker

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apache/pulsar-client-go/pulsaradmin"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/utils"
)

// securePulsar is a Pulsar standalone that requires token authentication and serves TLS, started by
// "pulsar.sh start DIR --secure".
type securePulsar struct {
	serviceURL, adminURL string // pulsar+ssl:// and https://
	plainAdminURL        string // the plain web service port, which requires the token too
	caFile               string // PEM of the CA that signed the broker's certificate
	token                string // a superuser's token
	secretKey            []byte // the HS256 key the broker verifies tokens with
}

// securePulsarStartTimeout bounds "pulsar.sh start --secure": a cold start, with the certificates and
// tokens made first, takes 30-90 s on a busy 2-core machine.
const securePulsarStartTimeout = 5 * time.Minute

// startSecurePulsar starts a secured standalone in a temporary directory on free ports and kills it when
// the test ends. It skips under -short and when PDS_PULSAR_SCRIPT is unset.
func startSecurePulsar(t *testing.T) *securePulsar {
	t.Helper()
	script := os.Getenv("PDS_PULSAR_SCRIPT")
	if script == "" {
		t.Skip("PDS_PULSAR_SCRIPT is not set: this test starts its own secured Pulsar through pulsar.sh; run it with " +
			"PDS_PULSAR_SCRIPT=$PWD/../deploy/scripts/pulsar.sh go test -run Secure ./internal/broker/ (make test sets it)")
	}
	if testing.Short() {
		t.Skip("starts a secured Pulsar standalone (30-90 s)")
	}
	dir := filepath.Join(t.TempDir(), "pulsar")
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), securePulsarStartTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, script, args...)
		// A second broker beside make test's own: keep it small.
		cmd.Env = append(os.Environ(), "PDS_PULSAR_MEM=-Xms256m -Xmx512m -XX:MaxDirectMemorySize=512m")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, stderr.String())
		}
		return string(out)
	}
	var ports []string
	for len(ports) < 5 {
		if p := strings.TrimSpace(run("free-port")); !slices.Contains(ports, p) {
			ports = append(ports, p)
		}
	}
	// Registered before the start, so a start that fails halfway is cleaned up too; kill is idempotent.
	t.Cleanup(func() { run("kill", dir) })
	out := run("start", dir, "--secure", "--broker-port", ports[0], "--web-port", ports[1], "--bookie-port", ports[2],
		"--broker-tls-port", ports[3], "--web-tls-port", ports[4])
	urls := strings.Fields(out)
	p := &securePulsar{
		serviceURL:    "pulsar+ssl://127.0.0.1:" + ports[3],
		adminURL:      "https://127.0.0.1:" + ports[4],
		plainAdminURL: "http://127.0.0.1:" + ports[1],
		caFile:        filepath.Join(dir, "secrets", "ca.pem"),
	}
	if !slices.Equal(urls, []string{p.serviceURL, p.adminURL}) {
		t.Fatalf("pulsar.sh start --secure printed %q, want the TLS URLs %s and %s", out, p.serviceURL, p.adminURL)
	}
	token, err := os.ReadFile(filepath.Join(dir, "secrets", "admin.token"))
	if err != nil {
		t.Fatalf("pulsar.sh start --secure wrote no superuser token: %v", err)
	}
	p.token = strings.TrimSpace(string(token))
	if p.secretKey, err = os.ReadFile(filepath.Join(dir, "secrets", "token-secret.key")); err != nil {
		t.Fatalf("read the token secret key: %v", err)
	}
	return p
}

// options are the driver's options for a client holding the superuser's token and trusting the CA.
func (p *securePulsar) options() PulsarOptions {
	return PulsarOptions{ServiceURL: p.serviceURL, AdminURL: p.adminURL, AuthToken: p.token, TLSTrustCertsFile: p.caFile}
}

// signedToken returns an HS256 JWT for subject, as "bin/pulsar tokens create" makes them.
func signedToken(key []byte, subject string) string {
	enc := base64.RawURLEncoding
	unsigned := enc.EncodeToString([]byte(`{"alg":"HS256"}`)) + "." + enc.EncodeToString([]byte(`{"sub":"`+subject+`"}`))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(unsigned))
	return unsigned + "." + enc.EncodeToString(mac.Sum(nil))
}

// refusalBound is how soon a refused connection must fail: well under the client's operation timeout
// (30 s), which is what a caller would wait for if the refusal went unnoticed.
const refusalBound = 15 * time.Second

func TestPulsarSecure(t *testing.T) {
	p := startSecurePulsar(t)
	t.Run("the driver works over TLS with the token", func(t *testing.T) { testSecureRoundTrip(t, p) })
	t.Run("refused credentials fail fast naming what to check", func(t *testing.T) { testSecureRefusedCredentials(t, p) })
	t.Run("an untrusted certificate fails naming the CA file", func(t *testing.T) { testSecureUntrustedCertificate(t, p) })
}

func openSecure(t *testing.T, opts PulsarOptions) *PulsarBroker {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b, err := OpenPulsar(ctx, opts)
	if err != nil {
		t.Fatalf("OpenPulsar(%s, %s) with token and CA: %v", opts.ServiceURL, opts.AdminURL, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func testSecureRoundTrip(t *testing.T, p *securePulsar) {
	t.Run("tenant, namespace and partitioned topic are created through the admin API", func(t *testing.T) {
		b := openSecure(t, p.options())
		topic := newTopic(t, b, 3)
		names := b.topicNames(topic)
		admin, err := pulsaradmin.NewClient(&pulsaradmin.Config{WebServiceURL: p.adminURL, Token: p.token, TLSTrustCertsFilePath: p.caFile})
		if err != nil {
			t.Fatalf("admin client: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		meta, err := admin.Topics().GetMetadataWithContext(ctx, mustTopicName(names.topic))
		if err != nil {
			t.Fatalf("partitioned metadata of %s, created by EnsureTopic: %v", names.topic, err)
		}
		if meta.Partitions != 3 {
			t.Fatalf("%s has %d partitions, want 3", names.topic, meta.Partitions)
		}
		ns, err := utils.GetNamespaceName(names.namespace)
		if err != nil {
			t.Fatal(err)
		}
		if auto, err := admin.Namespaces().GetTopicAutoCreationWithContext(ctx, *ns); err != nil || auto.Allow {
			t.Fatalf("namespace %s: automatic topic creation %+v (err %v), want it off as the driver sets it", names.namespace, auto, err)
		}
	})

	// The cases of the conformance suite that cross every path the credentials guard: the admin API
	// (topics, seek), producers, consumers with acks, readers (latest views) and reconnecting.
	prefix := "pdssecure-"
	d := conformanceDriver{
		newBroker: func(t *testing.T) Broker {
			opts := p.options()
			opts.TenantPrefix = prefix
			return openSecure(t, opts)
		},
		reopen: func(t *testing.T, old Broker) Broker {
			if err := old.Close(); err != nil {
				t.Fatalf("Close before reopen: %v", err)
			}
			opts := p.options()
			opts.TenantPrefix = prefix
			return openSecure(t, opts)
		},
	}
	cases := []struct {
		name string
		run  func(t *testing.T, d conformanceDriver)
	}{
		{"every published record is received with its content intact", testPublishReceiveIntact},
		{"an acknowledged record is not delivered again", testAckedNotRedelivered},
		{"two consumers of one subscription share its records without losing any", testConsumersShare},
		{"published records survive closing and reopening the broker", testDurableAcrossReopen},
		{"latest views keep the newest value per key", testLatestViews},
		{"seeking to the earliest record replays acknowledged records", testSeekEarliestReplays},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, d)
		})
	}
}

func testSecureRefusedCredentials(t *testing.T, p *securePulsar) {
	otherKey := make([]byte, 32)
	if _, err := rand.Read(otherKey); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name                 string
		token                string
		wantText, wantOption string // what the error must name, and what to check
		// adminOnly: the broker lets the role connect and authorizes it per topic, so only OpenPulsar's
		// admin API check (listing tenants takes a superuser) can catch it.
		adminOnly bool
	}{
		{"no token", "", "authentication", "--pulsar-auth-token", false},
		{"token signed with another key", signedToken(otherKey, "pds-admin"), "authentication", "--pulsar-auth-token", false},
		{"malformed token", "not-a-jwt", "authentication", "--pulsar-auth-token", false},
		{"valid token of a role that is no superuser", signedToken(p.secretKey, "some-workflow"), "authorization", "superUserRoles", true},
	}
	// Through OpenPulsar (the admin API answers first), and against the broker's binary protocol alone, as
	// when the admin API is reached another way (a proxy, plain HTTP inside the cluster).
	surfaces := []struct {
		name       string
		binaryOnly bool // skips the admin API
		open       func(ctx context.Context, opts PulsarOptions) error
	}{
		{name: "OpenPulsar", open: func(ctx context.Context, opts PulsarOptions) error {
			b, err := OpenPulsar(ctx, opts)
			if err == nil {
				_ = b.Close()
			}
			return err
		}},
		{name: "binary protocol", binaryOnly: true, open: func(ctx context.Context, opts PulsarOptions) error {
			return checkBinaryProtocol(ctx, opts.withDefaults())
		}},
	}
	for _, tc := range cases {
		for _, s := range surfaces {
			if tc.adminOnly && s.binaryOnly {
				continue
			}
			t.Run(tc.name+" via "+s.name, func(t *testing.T) {
				t.Parallel()
				opts := p.options()
				opts.AuthToken = tc.token
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				start := time.Now()
				err := s.open(ctx, opts)
				elapsed := time.Since(start)
				if err == nil {
					t.Fatalf("%s succeeded with %s, want an error naming %s", s.name, tc.name, tc.wantText)
				}
				if !strings.Contains(err.Error(), tc.wantText) || !strings.Contains(err.Error(), tc.wantOption) {
					t.Errorf("%s: %v\nwant an error naming %s and %s", s.name, err, tc.wantText, tc.wantOption)
				}
				if elapsed > refusalBound {
					t.Errorf("%s took %v to fail, want under %v (the refusal must not wait for a timeout)", s.name, elapsed, refusalBound)
				}
			})
		}
	}
}

func testSecureUntrustedCertificate(t *testing.T, p *securePulsar) {
	cases := []struct {
		name          string
		opts          func(PulsarOptions) PulsarOptions
		wantCertError bool
	}{
		{"no CA file", func(o PulsarOptions) PulsarOptions { o.TLSTrustCertsFile = ""; return o }, true},
		{"no CA file, admin API over plain HTTP", func(o PulsarOptions) PulsarOptions {
			o.TLSTrustCertsFile, o.AdminURL = "", p.plainAdminURL
			return o
		}, true},
		{"no CA file, insecure connections allowed", func(o PulsarOptions) PulsarOptions {
			o.TLSTrustCertsFile, o.TLSAllowInsecureConnection = "", true
			return o
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tc.opts(p.options())
			opts.TenantPrefix = "pdsinsecure-"
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			start := time.Now()
			b, err := OpenPulsar(ctx, opts)
			elapsed := time.Since(start)
			if !tc.wantCertError {
				if err != nil {
					t.Fatalf("OpenPulsar with insecure connections allowed: %v", err)
				}
				t.Cleanup(func() { _ = b.Close() })
				topic := newTopic(t, b, 2)
				records := makeRecords("insecure", 10, 2)
				publish(t, b, topic, records)
				c := subscribe(t, b, newSubscription(topic), ConsumerOptions{})
				assertSameIDs(t, "records received over an unverified TLS connection", eventIDs(receiveN(t, c, len(records), true)), sortedIDs(records))
				return
			}
			if err == nil {
				_ = b.Close()
				t.Fatal("OpenPulsar succeeded without the CA file, want a certificate error")
			}
			if !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), "--pulsar-tls-trust-certs-file") {
				t.Errorf("OpenPulsar: %v\nwant a certificate error naming --pulsar-tls-trust-certs-file", err)
			}
			if elapsed > refusalBound {
				t.Errorf("OpenPulsar took %v to fail, want under %v (a certificate error is not retried)", elapsed, refusalBound)
			}
		})
	}
}

// Certificate errors are not retried like an unreachable admin API: each names what to fix, at once.
// An httptest TLS server stands in for the admin API; its certificate names 127.0.0.1 and example.com.
func TestOpenPulsarExplainsUntrustedAdminCertificate(t *testing.T) {
	t.Parallel()
	server := httptest.NewUnstartedServer(http.NotFoundHandler())
	server.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	server.StartTLS()
	t.Cleanup(server.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	port := server.URL[strings.LastIndex(server.URL, ":")+1:]
	cases := []struct {
		name     string
		adminURL string
		caFile   string
		want     string
	}{
		{"CA not trusted", server.URL, "", "--pulsar-tls-trust-certs-file"},
		{"host the certificate does not name", "https://localhost:" + port, caFile, "a URL whose host the broker's certificate names"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			b, err := OpenPulsar(ctx, PulsarOptions{ServiceURL: "pulsar://127.0.0.1:1", AdminURL: tc.adminURL, TLSTrustCertsFile: tc.caFile})
			if err == nil {
				_ = b.Close()
				t.Fatal("OpenPulsar succeeded against an untrusted certificate")
			}
			if !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("OpenPulsar: %v\nwant a certificate error saying %q", err, tc.want)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("OpenPulsar took %v to fail: a certificate error must not be retried", elapsed)
			}
		})
	}
}
