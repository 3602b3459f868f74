// Package e2e holds PDS's process-level end-to-end tests: they build pds-controlplane and pds-dataplane,
// run them against a real PostgreSQL with the embedded broker, and check what a user of the public APIs
// sees (admin API, Connect streams, REST), including across a data-plane crash. The tests in pulsar_test.go
// run PDS on a real Apache Pulsar (PDS_TEST_PULSAR_URL, PDS_TEST_PULSAR_ADMIN_URL; skipped when unset):
// the same scenarios, then traffic under failure (a data-plane node SIGKILLed, Pulsar restarted, partitions
// added), each reporting how many events were published, delivered, redelivered and lost. The tests are
// skipped under go test -short.
package e2e
