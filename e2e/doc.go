// Package e2e holds PDS's process-level end-to-end tests: they build pds-controlplane and pds-dataplane,
// run them against a real PostgreSQL with the embedded broker, and check what a user of the public APIs
// sees (admin API, Connect streams, REST), including across a data-plane crash. The tests are skipped under
// go test -short.
package e2e
