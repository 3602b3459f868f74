package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/apache/pulsar-client-go/pulsar"
	pulsarlog "github.com/apache/pulsar-client-go/pulsar/log"
	"github.com/apache/pulsar-client-go/pulsaradmin/pkg/rest"
)

// What to check when Pulsar refuses the driver, named as an operator sets it (PulsarOptions field and
// pds-dataplane flag).
const (
	hintToken = "check the auth token (PulsarOptions.AuthToken, pds-dataplane --pulsar-auth-token-file or --pulsar-auth-token / PDS_PULSAR_AUTH_TOKEN)"
	hintRole  = "the token's role must be a Pulsar superuser (superUserRoles in broker.conf): the driver creates tenants and namespaces"
	hintCA    = "set the CA file (PulsarOptions.TLSTrustCertsFile, pds-dataplane --pulsar-tls-trust-certs-file / " +
		"PDS_PULSAR_TLS_TRUST_CERTS_FILE) to the PEM certificate of the CA that signed the broker's certificate"
	hintHostname = "use a URL whose host the broker's certificate names (its subject alternative names), or reissue the certificate"
)

// certificateHint is what to check for a certificate error.
func certificateHint(err error) string {
	var hostname x509.HostnameError
	if errors.As(err, &hostname) {
		return hintHostname
	}
	return hintCA
}

// maxConnectionCheck bounds the check of the binary protocol endpoint in OpenPulsar: a broker that refuses
// the handshake leaves the client retrying until its operation timeout, with nothing but "connection
// error" to show for it.
const maxConnectionCheck = 10 * time.Second

// explainAdminError adds what to check to an admin API error caused by credentials or certificates, the
// errors an operator can fix; other errors are returned as they are.
func explainAdminError(err error, hasToken bool) error {
	switch {
	case isAdminAuthorizationError(err):
		return fmt.Errorf("the admin API denied the token's role (authorization failed): %w; %s", err, hintRole)
	case isAdminStatus(err, http.StatusUnauthorized) && !hasToken:
		return fmt.Errorf("the admin API requires authentication and no auth token is set: %w; %s", err, hintToken)
	case isAdminStatus(err, http.StatusUnauthorized):
		return fmt.Errorf("the admin API refused the auth token (authentication failed): %w; %s", err, hintToken)
	case isCertificateError(err):
		return fmt.Errorf("the admin API's TLS certificate is not trusted: %w; %s", err, certificateHint(err))
	}
	return err
}

// isAdminAuthorizationError tells an admin API answer refusing an authenticated role. Pulsar answers
// those with 403, or with 401 and a reason such as "Unauthorized to validateSuperUserAccess …", where a
// refused token gets a bare 401.
func isAdminAuthorizationError(err error) bool {
	code, reason := adminErrorStatus(err)
	return code == http.StatusForbidden || code == http.StatusUnauthorized && strings.Contains(reason, "Unauthorized to")
}

// isCertificateError tells a server certificate this client does not trust, which no retry can fix.
func isCertificateError(err error) bool {
	var verification *tls.CertificateVerificationError
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verification) || errors.As(err, &unknownAuthority) || errors.As(err, &hostname) ||
		errors.As(err, &invalid)
}

// checkBinaryProtocol proves that the broker at o.ServiceURL accepts this client: that its TLS certificate
// is trusted (pulsar+ssl://) and that it takes the auth token. pulsar-client-go connects lazily and
// retries a refused handshake until the operation times out, so without this check a wrong token or an
// untrusted certificate shows up only later, as the first producer or consumer failing with "connection
// error".
func checkBinaryProtocol(ctx context.Context, o PulsarOptions) error {
	timeout := min(maxConnectionCheck, o.OperationTimeout)
	if deadline, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(deadline))
	}
	if timeout <= 0 {
		return fmt.Errorf("broker at %s: %w", o.ServiceURL, context.DeadlineExceeded)
	}
	if err := checkTLSCertificate(ctx, o, timeout); err != nil {
		return err
	}
	warnings := newLastWarning()
	clientOpts := pulsarClientOptions(o, slog.New(warningRecorder{last: warnings}))
	clientOpts.OperationTimeout = timeout
	clientOpts.ConnectionTimeout = timeout
	probe, err := pulsar.NewClient(clientOpts)
	if err != nil {
		return fmt.Errorf("client for %s: %w", o.ServiceURL, err)
	}
	// A lookup in a namespace the driver never creates: any answer from the broker, even "not found",
	// proves the connection and the authentication. It runs apart so that a refused handshake ends the
	// check at once; the lookup itself keeps retrying until the timeout, and closes its client then.
	probeTopic := "persistent://" + o.TenantPrefix + "connection-check/" + o.Namespace + "/connection-check"
	result := make(chan error, 1)
	go func() {
		defer probe.Close()
		_, err := probe.TopicPartitions(probeTopic)
		result <- err
	}()
	select {
	case <-ctx.Done():
		return fmt.Errorf("broker at %s: %w", o.ServiceURL, ctx.Err())
	case <-warnings.refused:
		return refusedError(o, warnings.get())
	case err = <-result:
	}
	switch {
	case err == nil:
		return nil
	case strings.Contains(err.Error(), "AuthorizationError"):
		return fmt.Errorf("the broker at %s denied the token's role (authorization failed): %w; %s", o.ServiceURL, err, hintRole)
	case !errors.Is(err, context.DeadlineExceeded):
		return nil // the broker answered
	}
	if last := warnings.get(); last != "" {
		return fmt.Errorf("no connection to the broker at %s within %v: %s", o.ServiceURL, timeout, last)
	}
	return fmt.Errorf("no connection to the broker at %s within %v: %w", o.ServiceURL, timeout, err)
}

// refusedError explains a handshake the broker refused for the client's credentials.
func refusedError(o PulsarOptions, refusal string) error {
	if isAuthorizationRefusal(refusal) {
		return fmt.Errorf("the broker at %s refused the connection (%s): authorization failed; %s", o.ServiceURL, refusal, hintRole)
	}
	if o.AuthToken == "" {
		return fmt.Errorf("the broker at %s refused the connection (%s): it requires authentication and no auth token is set; %s",
			o.ServiceURL, refusal, hintToken)
	}
	return fmt.Errorf("the broker at %s refused the auth token (%s): authentication failed; %s", o.ServiceURL, refusal, hintToken)
}

// isCredentialRefusal tells a client warning reporting that the broker refused the client's credentials
// (Pulsar answers the handshake with e.g. "Failed to authenticate").
func isCredentialRefusal(msg string) bool {
	msg = strings.ToLower(msg)
	return strings.Contains(msg, "authenticat") || isAuthorizationRefusal(msg)
}

func isAuthorizationRefusal(msg string) bool {
	msg = strings.ToLower(msg)
	return strings.Contains(msg, "authoriz") || strings.Contains(msg, "unauthorized")
}

// checkTLSCertificate verifies the broker's certificate the way pulsar-client-go does (the trusted CAs,
// the host name of the URL unless insecure connections are allowed), to say so when it is not trusted
// rather than let the client retry.
func checkTLSCertificate(ctx context.Context, o PulsarOptions, timeout time.Duration) error {
	u, err := url.Parse(o.ServiceURL)
	if err != nil {
		return fmt.Errorf("service URL %q: %w", o.ServiceURL, err)
	}
	if u.Scheme != "pulsar+ssl" {
		return nil
	}
	// InsecureSkipVerify is the operator's choice (development only), as the client applies it.
	config := &tls.Config{InsecureSkipVerify: o.TLSAllowInsecureConnection, ServerName: u.Hostname()}
	if config.RootCAs, err = trustedCAs(o.TLSTrustCertsFile); err != nil {
		return err
	}
	dialCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := (&tls.Dialer{NetDialer: &net.Dialer{}, Config: config}).DialContext(dialCtx, "tcp", u.Host)
	if err != nil {
		if isCertificateError(err) {
			return fmt.Errorf("the TLS certificate of the broker at %s is not trusted: %w; %s", o.ServiceURL, err, certificateHint(err))
		}
		// Not reachable yet, or not speaking TLS: the lookup that follows retries and says so.
		return nil
	}
	return conn.Close()
}

// trustedCAs reads the CAs of a TLS trust certs file; nil (the system roots) when file is empty. Both
// clients read the file themselves, but the admin client ignores one it cannot parse and then trusts
// nothing: reading it here first names the file instead.
func trustedCAs(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("TLS trust certs file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("TLS trust certs file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// pulsarClientOptions are the client options of o, logging to logger.
func pulsarClientOptions(o PulsarOptions, logger *slog.Logger) pulsar.ClientOptions {
	opts := pulsar.ClientOptions{
		URL:                        o.ServiceURL,
		OperationTimeout:           o.OperationTimeout,
		ConnectionTimeout:          10 * time.Second,
		TLSTrustCertsFilePath:      o.TLSTrustCertsFile,
		TLSAllowInsecureConnection: o.TLSAllowInsecureConnection,
		Logger:                     pulsarlog.NewLoggerWithSlog(logger),
	}
	if o.AuthToken != "" {
		opts.Authentication = pulsar.NewAuthenticationToken(o.AuthToken)
	}
	return opts
}

// lastWarning holds the newest warning a client logged: why the broker refused its connection, which
// the client reports nowhere else. refused is closed at the first warning that reports refused
// credentials.
type lastWarning struct {
	refused     chan struct{}
	refusedOnce sync.Once
	mu          sync.Mutex
	msg         string
}

func newLastWarning() *lastWarning { return &lastWarning{refused: make(chan struct{})} }

func (w *lastWarning) set(msg string) {
	w.mu.Lock()
	w.msg = msg
	w.mu.Unlock()
	if isCredentialRefusal(msg) {
		w.refusedOnce.Do(func() { close(w.refused) })
	}
}

func (w *lastWarning) get() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.msg
}

// warningRecorder is a slog.Handler keeping the newest warning or error, with its "error" attribute.
type warningRecorder struct {
	last  *lastWarning
	attrs []slog.Attr
}

func (h warningRecorder) Enabled(_ context.Context, level slog.Level) bool {
	return level >= slog.LevelWarn
}

func (h warningRecorder) Handle(_ context.Context, r slog.Record) error {
	msg := r.Message
	appendErr := func(a slog.Attr) bool {
		if a.Key == "error" {
			msg += ": " + a.Value.String()
		}
		return true
	}
	for _, a := range h.attrs {
		appendErr(a)
	}
	r.Attrs(appendErr)
	h.last.set(msg)
	return nil
}

func (h warningRecorder) WithAttrs(attrs []slog.Attr) slog.Handler {
	return warningRecorder{last: h.last, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h warningRecorder) WithGroup(string) slog.Handler { return h }

var _ slog.Handler = warningRecorder{}

// adminErrorStatus is the HTTP status and reason of an admin API error answer; code 0 when the error is
// no answer (network, timeout).
func adminErrorStatus(err error) (code int, reason string) {
	var re rest.Error
	var rp *rest.Error
	switch {
	case errors.As(err, &re):
		return re.Code, re.Reason
	case errors.As(err, &rp):
		return rp.Code, rp.Reason
	}
	return 0, ""
}
