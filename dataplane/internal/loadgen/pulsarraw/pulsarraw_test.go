package pulsarraw_test

import (
	"testing"

	"github.com/pds-platform/pds/dataplane/internal/loadgen"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/pulsarraw"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/pulsarsetup"
	"github.com/pds-platform/pds/dataplane/internal/loadgen/systemtest"
)

func newSystem(tb testing.TB) (loadgen.System, string) {
	serviceURL, adminURL := pulsarsetup.TestURLs(tb)
	return pulsarraw.New(pulsarraw.Options{ServiceURL: serviceURL, AdminURL: adminURL}), adminURL
}

func TestEachSubscriptionReceivesExactlyItsEvents(t *testing.T) {
	sys, adminURL := newSystem(t)
	pulsarsetup.CheckSystem(t, sys, adminURL)
}

// BenchmarkThroughput is run by hand, with a fixed count:
//
//	PDS_TEST_PULSAR_URL=pulsar://127.0.0.1:6650 PDS_TEST_PULSAR_ADMIN_URL=http://127.0.0.1:8085 \
//	  go test -run '^$' -bench Throughput -benchtime 100000x ./internal/loadgen/pulsarraw
func BenchmarkThroughput(b *testing.B) {
	sys, _ := newSystem(b)
	systemtest.Throughput(b, sys)
}

// BenchmarkThroughputMixedKeyBatches is BenchmarkThroughput with the client's default batch builder.
func BenchmarkThroughputMixedKeyBatches(b *testing.B) {
	serviceURL, adminURL := pulsarsetup.TestURLs(b)
	systemtest.Throughput(b, pulsarraw.New(pulsarraw.Options{ServiceURL: serviceURL, AdminURL: adminURL, MixedKeyBatches: true}))
}
