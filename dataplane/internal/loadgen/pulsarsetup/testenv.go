package pulsarsetup

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
)

// Environment variables naming the Pulsar that integration tests use (the same as the broker driver's).
const (
	EnvTestServiceURL = "PDS_TEST_PULSAR_URL"
	EnvTestAdminURL   = "PDS_TEST_PULSAR_ADMIN_URL"
)

// TestURLs returns the test Pulsar's service and admin URLs, or skips tb when they are unset or under
// -short.
func TestURLs(tb testing.TB) (serviceURL, adminURL string) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("skipped under -short: needs a running Pulsar")
	}
	serviceURL, adminURL = os.Getenv(EnvTestServiceURL), os.Getenv(EnvTestAdminURL)
	if serviceURL == "" || adminURL == "" {
		tb.Skipf("skipped: set %s and %s to a running Pulsar (e.g. pulsar://127.0.0.1:6650 and http://127.0.0.1:8080)",
			EnvTestServiceURL, EnvTestAdminURL)
	}
	return serviceURL, adminURL
}

// AssertTenantGone fails t when the run's tenant still exists at the Pulsar behind adminURL.
func AssertTenantGone(t *testing.T, adminURL string, topology loadgen.Topology) {
	t.Helper()
	admin, err := NewAdmin(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tenant := NamesOf(topology).Tenant
	exists, err := admin.TenantExists(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("tenant %s still exists after Cleanup", tenant)
	}
}
