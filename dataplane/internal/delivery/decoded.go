package delivery

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"sync/atomic"
	"unsafe"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// decodedCacheSlots bounds the decoded-event cache: about 1.5 KiB per slot for a typical event, so a
// few MiB in all, and enough recent events for streams of one topic that trail each other by tens of
// milliseconds at 100K events/s.
const decodedCacheSlots = 4096

// decodedEvent is one stored event decoded once for every session that delivers it. Its messages are
// shared by those sessions' DeliveredEvents and must never be modified.
type decodedEvent struct {
	encoded     []byte // a copy: compared on lookup, and rewritten into the delivered form's encoding
	event       *pdsv1.PortfolioDistribution
	distributed *pdsv1.PortfolioDistributed

	// The messages live here so that one allocation holds all three.
	eventValue        pdsv1.PortfolioDistribution
	distributedValue  pdsv1.PortfolioDistributed
	distributionValue pdsv1.DistributionInfo
}

// decodedCache shares decoding among the sessions of one node: every subscription of a topic reads the
// same records, so with N subscriptions an event is decoded once instead of N times, and the encoders
// of the API can recognise the shared message and encode it once as well.
//
// It is keyed by the record's bytes, so it needs nothing from the broker and cannot confuse two
// records: a slot is used only when its bytes equal the record's. Slots are direct-mapped and replaced
// on collision, so lookups and inserts are a hash, an atomic load or store and, on a hit, a compare.
//
// It also finds a decoded event from its delivered message (byEvent), so the API can have that message's
// protobuf encoding written from the stored bytes instead of marshalled (EncodedEvent).
type decodedCache struct {
	seed    maphash.Seed
	slots   [decodedCacheSlots]atomic.Pointer[decodedEvent]
	byEvent [decodedCacheSlots]atomic.Pointer[decodedEvent]
	// fields shares encodedEventField's work the way slots shares decoding.
	fields [decodedCacheSlots]atomic.Pointer[encodedEvent]
}

// encodedEvent is a stored event written as a DeliveredEvent's event field, for the streams that never
// decode it (StreamOptions.EncodedEvents).
type encodedEvent struct {
	stored []byte // a copy, compared on lookup
	field  []byte
}

func newDecodedCache() *decodedCache {
	return &decodedCache{seed: maphash.MakeSeed()}
}

// decode returns the decoded event for a record's bytes. With shared set it looks the record up first
// and caches what it decodes; without, it decodes only: a record that a single session reads gains
// nothing from the lookup and would pay for the hash. Either way the event can be found from its
// delivered message (byEvent) for as long as its slot is not taken.
func (c *decodedCache) decode(encoded []byte, shared bool) (*decodedEvent, error) {
	var slot *atomic.Pointer[decodedEvent]
	if shared {
		slot = &c.slots[maphash.Bytes(c.seed, encoded)%decodedCacheSlots]
		if hit := slot.Load(); hit != nil && bytes.Equal(hit.encoded, encoded) {
			c.byEvent[eventSlot(hit.distributed)].Store(hit)
			return hit, nil
		}
	}
	d := new(decodedEvent)
	if err := proto.Unmarshal(encoded, &d.eventValue); err != nil {
		return nil, err
	}
	d.event = &d.eventValue
	// routing.ToDistributed, without its two allocations.
	r := d.event.GetRouting()
	d.distributionValue.Topic = r.GetTopic()
	d.distributionValue.RoutingKey = r.GetRoutingKey()
	d.distributionValue.TargetWorkflows = r.GetTargetWorkflows()
	d.distributedValue.EventId = d.event.GetEventId()
	d.distributedValue.Timestamp = d.event.GetTimestamp()
	d.distributedValue.Distribution = &d.distributionValue
	d.distributedValue.Data = d.event.GetData()
	d.distributed = &d.distributedValue
	// A copy, not the record's bytes: those may pin a whole engine message of other records.
	d.encoded = bytes.Clone(encoded)
	if shared {
		slot.Store(d)
	}
	c.byEvent[eventSlot(d.distributed)].Store(d)
	return d, nil
}

// eventSlot picks ev's byEvent slot from its address (Fibonacci hashing); a hit is confirmed by
// comparing pointers, and the slot holds the event, so its address is not reused meanwhile.
func eventSlot(ev *pdsv1.PortfolioDistributed) uint64 {
	addr := uint64(uintptr(unsafe.Pointer(ev)))
	return (addr >> 4) * 0x9E3779B97F4A7C15 >> 52 % decodedCacheSlots
}

// encodedDistributed returns the protobuf encoding of ev, written from its stored bytes, when ev is the
// delivered message of an event decoded here recently; ok is false otherwise.
func (c *decodedCache) encodedDistributed(ev *pdsv1.PortfolioDistributed) (_ []byte, ok bool) {
	d := c.byEvent[eventSlot(ev)].Load()
	if d == nil || d.distributed != ev {
		return nil, false
	}
	return appendDistributed(make([]byte, 0, len(d.encoded)+16), d.encoded)
}

// encodedEventField returns the protobuf encoding of field 2 (event) of a DeliveredEvent carrying the event
// stored as stored: its tag, its length and the PortfolioDistributed written from the stored bytes, never
// decoded. With shared set it looks the record up first and caches what it writes, as decode does. ok is
// false when the stored bytes are not laid out as PDS stores events (see appendDistributed); decode them
// then. The result is shared and must not be modified; its capacity ends at its length, so appending to it
// copies.
func (c *decodedCache) encodedEventField(stored []byte, shared bool) (_ []byte, ok bool) {
	var slot *atomic.Pointer[encodedEvent]
	if shared {
		slot = &c.fields[maphash.Bytes(c.seed, stored)%decodedCacheSlots]
		if hit := slot.Load(); hit != nil && bytes.Equal(hit.stored, stored) {
			return hit.field, true
		}
	}
	// The tag and length go in front of the event, whose size is known only once it is written: write it
	// after room for the longest prefix, then move the prefix up against it.
	const maxPrefix = 1 + binary.MaxVarintLen64
	buf := make([]byte, maxPrefix, maxPrefix+len(stored)+16)
	buf, ok = appendDistributed(buf, stored)
	if !ok {
		return nil, false
	}
	size := len(buf) - maxPrefix
	var room [maxPrefix]byte
	prefix := protowire.AppendVarint(protowire.AppendTag(room[:0], deliveredEventField, protowire.BytesType), uint64(size))
	start := maxPrefix - len(prefix)
	copy(buf[start:], prefix)
	field := buf[start:len(buf):len(buf)]
	if shared {
		slot.Store(&encodedEvent{stored: bytes.Clone(stored), field: field})
	}
	return field, true
}
