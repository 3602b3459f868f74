package api

import (
	"sync/atomic"
	"unsafe"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// eventEncodingSlots bounds an eventEncodings cache: a few hundred bytes per slot.
const eventEncodingSlots = 4096

// eventEncoding is one event's encoding.
type eventEncoding struct {
	event   *pdsv1.PortfolioDistributed
	encoded []byte
}

// eventEncodings keeps recent events' encodings by event pointer. The delivery engine hands every
// session the same *PortfolioDistributed for one stored event, so the streams of all subscribers of an
// event find its encoding here and only their envelopes (ack id, delivery attempt) are written per
// subscriber.
//
// Slots are direct-mapped by pointer and replaced on collision. A slot holds its event, so the event's
// address cannot be reused while the slot names it.
type eventEncodings struct {
	encode func(*pdsv1.PortfolioDistributed) ([]byte, error)
	slots  [eventEncodingSlots]atomic.Pointer[eventEncoding]
}

// get returns ev's encoding, encoding it on a miss. The result must not be modified.
func (c *eventEncodings) get(ev *pdsv1.PortfolioDistributed) ([]byte, error) {
	// The address only picks a slot (Fibonacci hashing); a hit is confirmed by comparing pointers.
	addr := uint64(uintptr(unsafe.Pointer(ev)))
	slot := &c.slots[(addr>>4)*0x9E3779B97F4A7C15>>52%eventEncodingSlots]
	if hit := slot.Load(); hit != nil && hit.event == ev {
		return hit.encoded, nil
	}
	out, err := c.encode(ev)
	if err != nil {
		return nil, err
	}
	slot.Store(&eventEncoding{event: ev, encoded: out})
	return out, nil
}
