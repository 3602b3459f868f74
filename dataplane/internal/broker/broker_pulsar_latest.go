package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/apache/pulsar-client-go/pulsar"
)

// latestValueVersion prefixes every stored latest value. Pulsar compaction treats an empty payload as a
// deletion of the key, so a value is never stored empty.
const latestValueVersion byte = 1

// pulsarView is one latest view (tenant + view): a compacted non-partitioned topic, read from the start
// by a reader into memory and then followed. Values this process puts are applied at once, so a
// GetLatest after PutLatest sees them; the reader never replaces a value with an older message.
type pulsarView struct {
	topic  string
	ready  chan struct{} // closed once the initial read finished or failed
	err    error
	reader pulsar.Reader
	pulsar.Producer
	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once

	mu     sync.RWMutex
	values map[string]latestEntry
}

type latestEntry struct {
	value []byte
	id    pulsar.MessageID
}

// apply keeps value unless the view already holds a newer message for key.
func (v *pulsarView) apply(key string, payload []byte, id pulsar.MessageID) {
	if len(payload) == 0 || payload[0] != latestValueVersion {
		return // not written by this driver
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if cur, ok := v.values[key]; ok && compareMessageIDs(cur.id, id) >= 0 {
		return
	}
	v.values[key] = latestEntry{value: payload[1:], id: id}
}

func compareMessageIDs(a, b pulsar.MessageID) int {
	switch {
	case a.LedgerID() != b.LedgerID():
		return cmpInt64(a.LedgerID(), b.LedgerID())
	case a.EntryID() != b.EntryID():
		return cmpInt64(a.EntryID(), b.EntryID())
	default:
		return cmpInt64(int64(a.BatchIdx()), int64(b.BatchIdx()))
	}
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (v *pulsarView) close() {
	<-v.ready
	v.closeOnce.Do(func() {
		if v.stop != nil {
			v.stop()
		}
		if v.reader != nil {
			v.reader.Close()
			<-v.done
		}
		if v.Producer != nil {
			v.Producer.Close()
		}
	})
}

// view returns the loaded view, creating its topic and reading it on first use.
func (b *PulsarBroker) view(ctx context.Context, tenantID, view string) (*pulsarView, error) {
	names := b.namesOf(tenantID, "latest-"+engineToken(view))
	b.mu.Lock()
	if b.isClosed() {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	v, ok := b.views[names.topic]
	if !ok {
		v = &pulsarView{topic: names.topic, ready: make(chan struct{}), values: map[string]latestEntry{}}
		b.views[names.topic] = v
		b.mu.Unlock()
		// Loaded on a context of its own: the view outlives the call that first needed it.
		go b.loadView(context.WithoutCancel(ctx), names, v)
	} else {
		b.mu.Unlock()
	}
	select {
	case <-v.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if v.err != nil {
		b.mu.Lock()
		if b.views[names.topic] == v {
			delete(b.views, names.topic)
		}
		b.mu.Unlock()
		return nil, v.err
	}
	return v, nil
}

func (b *PulsarBroker) loadView(ctx context.Context, names pulsarNames, v *pulsarView) {
	defer close(v.ready)
	ctx, cancel := context.WithTimeout(ctx, b.opts.OperationTimeout)
	defer cancel()
	fail := func(err error) {
		v.err = fmt.Errorf("latest view %s: %w", names.topic, err)
		if v.reader != nil {
			v.reader.Close()
		}
		if v.Producer != nil {
			v.Producer.Close()
		}
		v.reader, v.Producer = nil, nil
	}
	if err := b.ensureNamespace(ctx, names); err != nil {
		fail(err)
		return
	}
	topic := mustTopicName(names.topic)
	err := b.retryAdmin(ctx, "create topic "+names.topic, func(ctx context.Context) error {
		err := b.admin.Topics().CreateWithContext(ctx, topic, 0)
		if isAdminStatus(err, http.StatusConflict) {
			return nil
		}
		return err
	})
	if err != nil {
		fail(err)
		return
	}
	v.reader, err = b.client.CreateReader(pulsar.ReaderOptions{
		Topic:          names.topic,
		StartMessageID: pulsar.EarliestMessageID(),
		ReadCompacted:  true,
	})
	if err != nil {
		fail(fmt.Errorf("create reader: %w", err))
		return
	}
	v.Producer, err = b.client.CreateProducer(pulsar.ProducerOptions{
		Topic:                   names.topic,
		BatchingMaxPublishDelay: b.opts.BatchingMaxDelay,
		BatcherBuilderType:      pulsar.KeyBasedBatchBuilder,
		SendTimeout:             b.opts.OperationTimeout,
	})
	if err != nil {
		fail(fmt.Errorf("create producer: %w", err))
		return
	}
	for v.reader.HasNext() {
		m, err := v.reader.Next(ctx)
		if err != nil {
			fail(fmt.Errorf("read: %w", err))
			return
		}
		v.apply(m.Key(), m.Payload(), m.ID())
	}
	follow, stop := context.WithCancel(context.Background())
	v.stop = stop
	v.done = make(chan struct{})
	go func() {
		defer close(v.done)
		for {
			m, err := v.reader.Next(follow)
			if err != nil {
				if follow.Err() == nil && !b.isClosed() {
					b.log.Error("latest view stopped following its topic", "topic", names.topic, "err", err)
				}
				return
			}
			v.apply(m.Key(), m.Payload(), m.ID())
		}
	}()
}

// PutLatest sends the value keyed by key to the view's compacted topic and returns once Pulsar stored it.
func (b *PulsarBroker) PutLatest(ctx context.Context, tenantID, view, key string, value []byte) error {
	if b.isClosed() {
		return ErrClosed
	}
	v, err := b.view(ctx, tenantID, view)
	if err != nil {
		return fmt.Errorf("put latest %s/%s: %w", view, key, err)
	}
	payload := make([]byte, 1+len(value))
	payload[0] = latestValueVersion
	copy(payload[1:], value)
	id, err := v.Send(ctx, &pulsar.ProducerMessage{Key: key, Payload: payload})
	if err != nil {
		if b.isClosed() || errors.Is(err, pulsar.ErrProducerClosed) {
			return ErrClosed
		}
		return fmt.Errorf("put latest %s/%s: %w", view, key, err)
	}
	v.apply(key, payload, id)
	return nil
}

// GetLatest returns the newest value this process has read or written for the key.
func (b *PulsarBroker) GetLatest(ctx context.Context, tenantID, view, key string) ([]byte, bool, error) {
	if b.isClosed() {
		return nil, false, ErrClosed
	}
	v, err := b.view(ctx, tenantID, view)
	if err != nil {
		return nil, false, fmt.Errorf("get latest %s/%s: %w", view, key, err)
	}
	v.mu.RLock()
	e, ok := v.values[key]
	v.mu.RUnlock()
	if !ok {
		return nil, false, nil
	}
	return e.value, true, nil
}
