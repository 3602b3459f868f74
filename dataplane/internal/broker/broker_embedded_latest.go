package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Latest views live in one JetStream key-value bucket per tenant (history 1, file storage), so only the
// newest value per key is kept. The bucket's stream persists asynchronously: JetStream writes the values
// to its files from a flush loop and fsyncs them on its sync timer, not once per value. A view is
// rewritten by its portfolio's next event and PDS already loses views still pending when it crashes (see
// latest.Store), so fsyncing each value bought little: on the 2-core VM those writes were about 700
// fsyncs a second at 10K events/s over 1,000 portfolios, a fifth of a core.
//
// Builds before this kept views in a bucket fsynced on every write (legacyLatestBucketPrefix). A stream's
// persist mode cannot change, so views are written to a bucket of a new name, and GetLatest reads a key
// from the earlier bucket while the current one lacks it.
const (
	latestBucketPrefix       = "PDS_VIEWS_"
	legacyLatestBucketPrefix = "PDS_LATEST_"
)

// PutLatest stores value as the newest of (tenantID, view, key).
func (b *EmbeddedBroker) PutLatest(ctx context.Context, tenantID, view, key string, value []byte) error {
	kv, err := b.latestBucket(ctx, tenantID, true)
	if err != nil {
		return fmt.Errorf("put latest %s/%s: %w", view, key, err)
	}
	if _, err := kv.Put(ctx, latestKey(view, key), value); err != nil {
		return fmt.Errorf("put latest %s/%s: %w", view, key, err)
	}
	return nil
}

// GetLatest reads the newest value put for (tenantID, view, key).
func (b *EmbeddedBroker) GetLatest(ctx context.Context, tenantID, view, key string) ([]byte, bool, error) {
	kv, err := b.latestBucket(ctx, tenantID, false)
	if err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, false, fmt.Errorf("get latest %s/%s: %w", view, key, err)
	}
	if kv != nil {
		value, ok, err := getLatest(ctx, kv, view, key)
		if ok || err != nil {
			return value, ok, err
		}
	}
	legacy, err := b.legacyLatestBucket(ctx, tenantID)
	if err != nil || legacy == nil {
		return nil, false, err
	}
	return getLatest(ctx, legacy, view, key)
}

func getLatest(ctx context.Context, kv jetstream.KeyValue, view, key string) ([]byte, bool, error) {
	entry, err := kv.Get(ctx, latestKey(view, key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("get latest %s/%s from %s: %w", view, key, kv.Bucket(), err)
	}
	return entry.Value(), true, nil
}

// latestBucket returns the tenant's bucket, creating it when create is set (else ErrBucketNotFound).
func (b *EmbeddedBroker) latestBucket(ctx context.Context, tenantID string, create bool) (jetstream.KeyValue, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	b.mu.Lock()
	kv, ok := b.kv[tenantID]
	b.mu.Unlock()
	if ok {
		return kv, nil
	}
	bucket := latestBucketPrefix + engineToken(tenantID)
	kv, err := b.js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && create {
		kv, err = b.createLatestBucket(ctx, tenantID, bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("latest views bucket of tenant %q: %w", tenantID, err)
	}
	b.mu.Lock()
	b.kv[tenantID] = kv
	b.mu.Unlock()
	return kv, nil
}

// createLatestBucket creates the bucket's stream as jetstream.CreateKeyValue would for history 1 and file
// storage, with asynchronous persistence, which its KeyValueConfig cannot ask for.
func (b *EmbeddedBroker) createLatestBucket(ctx context.Context, tenantID, bucket string) (jetstream.KeyValue, error) {
	_, err := b.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:              "KV_" + bucket,
		Description:       "PDS latest views of tenant " + tenantID,
		Subjects:          []string{"$KV." + bucket + ".>"},
		MaxMsgsPerSubject: 1,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          1,
		AllowRollup:       true,
		DenyDelete:        true,
		AllowDirect:       true,
		Duplicates:        2 * time.Minute,
		Discard:           jetstream.DiscardNew,
		PersistMode:       jetstream.AsyncPersistMode,
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil, err
	}
	return b.js.KeyValue(ctx, bucket)
}

// legacyLatestBucket returns the tenant's bucket of an earlier build, or nil when there is none. Whether
// there is one is looked up once per process: nothing creates such buckets any more.
func (b *EmbeddedBroker) legacyLatestBucket(ctx context.Context, tenantID string) (jetstream.KeyValue, error) {
	if b.isClosed() {
		return nil, ErrClosed
	}
	b.mu.Lock()
	kv, ok := b.legacyKV[tenantID]
	b.mu.Unlock()
	if ok {
		return kv, nil
	}
	kv, err := b.js.KeyValue(ctx, legacyLatestBucketPrefix+engineToken(tenantID))
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("latest views bucket of an earlier build, tenant %q: %w", tenantID, err)
	}
	b.mu.Lock()
	b.legacyKV[tenantID] = kv
	b.mu.Unlock()
	return kv, nil
}

// latestKey joins view and key into one key-value key. Each part is escaped so any string fits the
// engine's key alphabet and distinct (view, key) pairs never collide: bytes outside [A-Za-z0-9_-]
// become "=XX" (hex), and the empty string becomes "=".
func latestKey(view, key string) string {
	return escapeKeyPart(view) + "." + escapeKeyPart(key)
}

func escapeKeyPart(s string) string {
	if s == "" {
		return "="
	}
	const hexDigits = "0123456789ABCDEF"
	var sb strings.Builder
	sb.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') {
			sb.WriteByte(c)
			continue
		}
		sb.WriteByte('=')
		sb.WriteByte(hexDigits[c>>4])
		sb.WriteByte(hexDigits[c&0xF])
	}
	return sb.String()
}
