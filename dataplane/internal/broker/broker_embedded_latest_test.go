package broker

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// Views are written to a bucket whose stream JetStream persists without an fsync per value.
func TestEmbeddedLatestViewsPersistAsynchronously(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	b := openEmbeddedForTest(t, t.TempDir(), EmbeddedOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := b.PutLatest(ctx, "tenant-a", "state", "PF-1", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	stream, err := b.js.Stream(ctx, "KV_"+latestBucketPrefix+engineToken("tenant-a"))
	if err != nil {
		t.Fatal(err)
	}
	if mode := stream.CachedInfo().Config.PersistMode; mode != jetstream.AsyncPersistMode {
		t.Fatalf("the views stream persists in mode %v, want %v", mode, jetstream.AsyncPersistMode)
	}
}

// A data directory of an earlier build keeps its views in a bucket fsynced on every write. They are read
// until the portfolio's view is written again, and are still read after a restart.
func TestEmbeddedReadsLatestViewsOfAnEarlierBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an in-process JetStream server")
	}
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b := openEmbeddedForTest(t, dir, EmbeddedOptions{})
	// The bucket as earlier builds created it.
	legacy, err := b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: legacyLatestBucketPrefix + engineToken("tenant-a"), History: 1, Storage: jetstream.FileStorage, Replicas: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	for key, value := range map[string]string{"PF-1": "old 1", "PF-2": "old 2"} {
		if _, err := legacy.Put(ctx, latestKey("state", key), []byte(value)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.PutLatest(ctx, "tenant-a", "state", "PF-2", []byte("new 2")); err != nil {
		t.Fatal(err)
	}

	check := func(b *EmbeddedBroker, when string) {
		for key, want := range map[string]string{"PF-1": "old 1", "PF-2": "new 2", "PF-3": ""} {
			got, ok, err := b.GetLatest(ctx, "tenant-a", "state", key)
			if err != nil || ok != (want != "") || string(got) != want {
				t.Errorf("%s: GetLatest(%s) = %q, %v, %v; want %q", when, key, got, ok, err, want)
			}
		}
	}
	check(b, "before a restart")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	check(openEmbeddedForTest(t, dir, EmbeddedOptions{}), "after a restart")
}
