package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// PutLatest stores value in the tenant's JetStream key-value bucket (history 1, file storage), so only the
// newest value per key is kept.
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
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, false, nil // the tenant never put anything
	}
	if err != nil {
		return nil, false, fmt.Errorf("get latest %s/%s: %w", view, key, err)
	}
	entry, err := kv.Get(ctx, latestKey(view, key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("get latest %s/%s: %w", view, key, err)
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
	bucket := "PDS_LATEST_" + engineToken(tenantID)
	kv, err := b.js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) && create {
		kv, err = b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "PDS latest views of tenant " + tenantID,
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    1,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = b.js.KeyValue(ctx, bucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("latest views bucket of tenant %q: %w", tenantID, err)
	}
	b.mu.Lock()
	b.kv[tenantID] = kv
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
