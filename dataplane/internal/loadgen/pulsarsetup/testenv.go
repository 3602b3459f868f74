package pulsarsetup

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/systemtest"
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

// CheckSystem runs systemtest.Check on a system that reads Pulsar through Key_Shared subscriptions, which
// may redeliver when consumers join or leave (the check logs how many), and checks that its Cleanup
// removed the run's tenant from the Pulsar behind adminURL.
func CheckSystem(t *testing.T, sys loadgen.System, adminURL string) {
	t.Helper()
	systemtest.Check(t, sys, systemtest.Options{
		AllowDuplicates: true,
		AfterCleanup: func(t *testing.T, topology loadgen.Topology) {
			AssertTenantGone(t, adminURL, topology)
		},
	})
}
