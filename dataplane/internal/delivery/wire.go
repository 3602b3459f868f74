package delivery

import "google.golang.org/protobuf/encoding/protowire"

// Field numbers of the stored event (pds.v1.PortfolioDistribution, its RoutingInfo) and of the delivered
// one (pds.v1.PortfolioDistributed, its DistributionInfo); proto/pds/v1/portfolio.proto.
const (
	storedEventID   = 1
	storedTimestamp = 2
	storedData      = 4
	storedRouting   = 5

	routingTopic           = 1
	routingKey             = 2
	routingTargetWorkflows = 3

	// deliveredEventField is pds.v1.DeliveredEvent's event (proto/pds/v1/stream.proto).
	deliveredEventField = 2

	deliveredEventID      = 1
	deliveredTimestamp    = 2
	deliveredDistribution = 3
	deliveredData         = 4
)

// appendDistributed appends to dst the protobuf encoding of routing.ToDistributed of the event stored
// as stored, byte for byte what proto.Marshal writes, without decoding it: the event's data is copied as
// stored and its routing rewritten into the distribution. ok is false when stored is not laid out as
// PDS stores events (a singular field twice, an unexpected wire type); the caller then marshals the
// decoded event.
func appendDistributed(dst, stored []byte) (_ []byte, ok bool) {
	// data_type and unknown fields are skipped: ToDistributed leaves them out.
	var event fieldValues
	if !event.scan(stored, fieldSet(storedEventID, storedTimestamp, storedData, storedRouting), 0) {
		return dst, false
	}
	// priority and unknown fields are skipped: a DistributionInfo has none.
	var routing fieldValues
	if !routing.scan(event.values[storedRouting], fieldSet(routingTopic, routingKey), routingTargetWorkflows) {
		return dst, false
	}
	eventID, timestamp, data := event.values[storedEventID], event.values[storedTimestamp], event.values[storedData]
	topic, key, targets := routing.values[routingTopic], routing.values[routingKey], routing.repeated

	// proto3 leaves empty strings out; the distribution is always written (ToDistributed sets it), each
	// target workflow too, even an empty one.
	distributionSize := stringFieldSize(routingTopic, topic) + stringFieldSize(routingKey, key)
	for _, t := range targets {
		distributionSize += protowire.SizeTag(routingTargetWorkflows) + protowire.SizeBytes(len(t))
	}
	dst = appendStringField(dst, deliveredEventID, eventID)
	dst = appendStringField(dst, deliveredTimestamp, timestamp)
	dst = protowire.AppendTag(dst, deliveredDistribution, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(distributionSize))
	dst = appendStringField(dst, routingTopic, topic)
	dst = appendStringField(dst, routingKey, key)
	for _, t := range targets {
		dst = protowire.AppendTag(dst, routingTargetWorkflows, protowire.BytesType)
		dst = protowire.AppendBytes(dst, t)
	}
	if event.present&(1<<storedData) != 0 {
		dst = protowire.AppendTag(dst, deliveredData, protowire.BytesType)
		dst = protowire.AppendBytes(dst, data)
	}
	return dst, true
}

// fieldSet is a bit per field number (below 32).
func fieldSet(nums ...protowire.Number) uint32 {
	var set uint32
	for _, n := range nums {
		set |= 1 << n
	}
	return set
}

// fieldValues holds the length-delimited fields of a message that scan picked out.
type fieldValues struct {
	values   [8][]byte // of the singular fields, by number
	present  uint32    // a bit per singular field found
	repeated [][]byte  // of the repeated field, in order
}

// scan picks out the singular fields (numbers below 8, each at most once) and the occurrences of the
// repeated field (0: none) of message b, all length-delimited, and skips every other field. It reports
// false when b is malformed or one of those fields breaks that shape.
func (f *fieldValues) scan(b []byte, singular uint32, repeated protowire.Number) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		isSingular := num < 8 && singular&(1<<num) != 0
		if !isSingular && (repeated == 0 || num != repeated) {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		if typ != protowire.BytesType || (isSingular && f.present&(1<<num) != 0) {
			return false
		}
		value, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if isSingular {
			f.values[num] = value
			f.present |= 1 << num
		} else {
			f.repeated = append(f.repeated, value)
		}
	}
	return true
}

func stringFieldSize(num protowire.Number, value []byte) int {
	if len(value) == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(value))
}

func appendStringField(dst []byte, num protowire.Number, value []byte) []byte {
	if len(value) == 0 {
		return dst
	}
	dst = protowire.AppendTag(dst, num, protowire.BytesType)
	return protowire.AppendBytes(dst, value)
}
