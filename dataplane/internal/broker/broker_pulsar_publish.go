package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/apache/pulsar-client-go/pulsar"
)

// PropertyEventID is the Pulsar message property holding Record.EventID.
const PropertyEventID = "event_id"

// pulsarProducer is the cached producer of one partitioned topic. PDS picks each record's partition
// (Record.Partition); the producer's router reads it from routes, filled just before SendAsync, which
// calls the router synchronously.
//
// A producer replaced in the cache (the topic grew) is closed only once the Publish calls using it are
// done: the client's Close fails the sends still pending, which would fail those calls for nothing.
type pulsarProducer struct {
	topic  string
	ready  chan struct{} // closed once producer or err is set
	err    error
	routes sync.Map // *pulsar.ProducerMessage -> partition
	pulsar.Producer
	closeOnce sync.Once

	mu      sync.Mutex
	users   int  // Publish calls holding it
	retired bool // out of the cache: close when users drops to 0
}

func (p *pulsarProducer) close() {
	<-p.ready
	if p.Producer != nil {
		p.closeOnce.Do(p.Producer.Close)
	}
}

// release ends one use; the last use of a retired producer closes it.
func (p *pulsarProducer) release() {
	p.mu.Lock()
	p.users--
	closeNow := p.retired && p.users == 0
	p.mu.Unlock()
	if closeNow {
		go p.close()
	}
}

// retire marks the producer as out of the cache and closes it if nobody uses it.
func (p *pulsarProducer) retire() {
	p.mu.Lock()
	p.retired = true
	closeNow := p.users == 0
	p.mu.Unlock()
	if closeNow {
		go p.close()
	}
}

// partitions is how many partitions the producer currently routes over.
func (p *pulsarProducer) partitions() int {
	if md, ok := p.Producer.(interface{ NumPartitions() uint32 }); ok {
		return int(md.NumPartitions())
	}
	return 0
}

// producer returns the topic's producer for one Publish call, creating it on first use (concurrent
// callers wait for one creation). The caller releases it.
func (b *PulsarBroker) producer(ctx context.Context, topic string) (*pulsarProducer, error) {
	b.mu.Lock()
	if b.isClosed() {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	p, ok := b.producers[topic]
	create := !ok
	if create {
		p = &pulsarProducer{topic: topic, ready: make(chan struct{})}
		b.producers[topic] = p
	}
	// Under b.mu, like the removal from the cache: a retired producer gains no users.
	p.mu.Lock()
	p.users++
	p.mu.Unlock()
	b.mu.Unlock()
	if create {
		b.createProducer(p)
	}
	select {
	case <-p.ready:
	case <-ctx.Done():
		p.release()
		return nil, ctx.Err()
	}
	if p.err == nil {
		return p, nil
	}
	b.mu.Lock()
	if b.producers[p.topic] == p {
		delete(b.producers, p.topic)
	}
	b.mu.Unlock()
	p.release()
	return nil, p.err
}

func (b *PulsarBroker) createProducer(p *pulsarProducer) {
	defer close(p.ready)
	producer, err := b.client.CreateProducer(pulsar.ProducerOptions{
		Topic: p.topic,
		MessageRouter: func(msg *pulsar.ProducerMessage, _ pulsar.TopicMetadata) int {
			if partition, ok := p.routes.Load(msg); ok {
				return partition.(int)
			}
			return 0
		},
		BatchingMaxPublishDelay: b.opts.BatchingMaxDelay,
		// Key_Shared consumers need every batch to hold one key.
		BatcherBuilderType:              pulsar.KeyBasedBatchBuilder,
		PartitionsAutoDiscoveryInterval: b.opts.PartitionsDiscovery,
		SendTimeout:                     b.opts.OperationTimeout,
	})
	if err != nil {
		if b.isClosed() {
			err = ErrClosed
		}
		p.err = fmt.Errorf("create producer for %s: %w", p.topic, err)
		return
	}
	p.Producer = producer
}

// dropProducer forgets the topic's cached producer, which closes once its Publish calls are done; the
// next Publish creates a new one.
func (b *PulsarBroker) dropProducer(topic string) {
	b.mu.Lock()
	p, ok := b.producers[topic]
	delete(b.producers, topic)
	b.mu.Unlock()
	if ok {
		p.retire()
	}
}

// Publish sends every record asynchronously on the topic's producer, which batches records of one key
// and partition, and returns once Pulsar has acknowledged (stored) every one of them.
func (b *PulsarBroker) Publish(ctx context.Context, topic TopicRef, records []Record) error {
	if b.isClosed() {
		return ErrClosed
	}
	if len(records) == 0 {
		return nil
	}
	names := b.topicNames(topic)
	highest := 0
	for i := range records {
		highest = max(highest, records[i].Partition)
	}
	pending := records
	for attempt := 1; ; attempt++ {
		p, err := b.producerFor(ctx, topic, names.topic, highest)
		if err != nil {
			return fmt.Errorf("publish to topic %s: %w", topic.ID, err)
		}
		retry, err := b.sendAll(ctx, p, pending)
		p.release()
		if err != nil {
			return fmt.Errorf("publish %d records to topic %s: %w", len(records), topic.ID, err)
		}
		if len(retry) == 0 {
			return nil
		}
		// The producer closed under these (it reconnected to a deleted topic, or the broker is closing):
		// Pulsar may have stored some of them already; consumers see duplicates by EventID.
		if attempt == 3 {
			return fmt.Errorf("publish %d records to topic %s: producer closed %d times while sending", len(records), topic.ID, attempt)
		}
		b.dropProducer(names.topic)
		pending = retry
	}
}

// producerFor returns a producer (to release) that routes over more than highest partitions. A cached
// producer that knows fewer is replaced: the topic grew, maybe through another node, and is grown here
// if that has not reached Pulsar yet.
func (b *PulsarBroker) producerFor(ctx context.Context, topic TopicRef, name string, highest int) (*pulsarProducer, error) {
	p, err := b.producer(ctx, name)
	if err != nil {
		return nil, err
	}
	if highest < p.partitions() {
		return p, nil
	}
	p.release()
	grown := topic
	grown.Partitions = max(topic.Partitions, highest+1)
	if err := b.EnsureTopic(ctx, grown); err != nil {
		return nil, err
	}
	b.dropProducer(name)
	if p, err = b.producer(ctx, name); err != nil {
		return nil, err
	}
	if n := p.partitions(); highest >= n {
		p.release()
		return nil, fmt.Errorf("partition %d out of range of the topic's %d partitions", highest, n)
	}
	return p, nil
}

// sendAll sends records on p and waits for every callback. It returns the records that failed because
// p was closed under them (to send again on a fresh producer) and the first other error.
func (b *PulsarBroker) sendAll(ctx context.Context, p *pulsarProducer, records []Record) (retry []Record, err error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		failed   []int
	)
	wg.Add(len(records))
	for i := range records {
		r := &records[i]
		props := make(map[string]string, len(r.Properties)+1)
		maps.Copy(props, r.Properties)
		props[PropertyEventID] = r.EventID
		msg := &pulsar.ProducerMessage{Payload: r.Value, Key: r.Key, Properties: props}
		p.routes.Store(msg, r.Partition)
		p.SendAsync(ctx, msg, func(_ pulsar.MessageID, _ *pulsar.ProducerMessage, err error) {
			if err != nil {
				mu.Lock()
				if errors.Is(err, pulsar.ErrProducerClosed) && !b.isClosed() {
					failed = append(failed, i)
				} else if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
			wg.Done()
		})
		p.routes.Delete(msg)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.closed:
		return nil, ErrClosed
	}
	mu.Lock()
	defer mu.Unlock()
	if firstErr != nil {
		if b.isClosed() {
			return nil, ErrClosed
		}
		return nil, firstErr
	}
	// In their original order, so records of one key stay in order when sent again.
	slices.Sort(failed)
	for _, i := range failed {
		retry = append(retry, records[i])
	}
	return retry, nil
}
