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
	var eventID, timestamp, data, routing []byte
	var hasData, hasRouting bool
	seen := 0 // bit per singular field
	for rest := stored; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return dst, false
		}
		rest = rest[n:]
		if num >= storedEventID && num <= storedRouting && num != 3 {
			if typ != protowire.BytesType || seen&(1<<num) != 0 {
				return dst, false
			}
			seen |= 1 << num
			value, n := protowire.ConsumeBytes(rest)
			if n < 0 {
				return dst, false
			}
			rest = rest[n:]
			switch num {
			case storedEventID:
				eventID = value
			case storedTimestamp:
				timestamp = value
			case storedData:
				data, hasData = value, true
			case storedRouting:
				routing, hasRouting = value, true
			}
			continue
		}
		// data_type and unknown fields: ToDistributed leaves them out.
		if n = protowire.ConsumeFieldValue(num, typ, rest); n < 0 {
			return dst, false
		}
		rest = rest[n:]
	}

	var topic, key []byte
	var targets [][]byte
	if hasRouting {
		seenRouting := 0
		for rest := routing; len(rest) > 0; {
			num, typ, n := protowire.ConsumeTag(rest)
			if n < 0 {
				return dst, false
			}
			rest = rest[n:]
			if num >= routingTopic && num <= routingTargetWorkflows {
				if typ != protowire.BytesType || (num != routingTargetWorkflows && seenRouting&(1<<num) != 0) {
					return dst, false
				}
				seenRouting |= 1 << num
				value, n := protowire.ConsumeBytes(rest)
				if n < 0 {
					return dst, false
				}
				rest = rest[n:]
				switch num {
				case routingTopic:
					topic = value
				case routingKey:
					key = value
				default:
					targets = append(targets, value)
				}
				continue
			}
			// priority and unknown fields: a DistributionInfo has none.
			if n = protowire.ConsumeFieldValue(num, typ, rest); n < 0 {
				return dst, false
			}
			rest = rest[n:]
		}
	}

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
	if hasData {
		dst = protowire.AppendTag(dst, deliveredData, protowire.BytesType)
		dst = protowire.AppendBytes(dst, data)
	}
	return dst, true
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
