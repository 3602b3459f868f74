package filter

import (
	"errors"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
)

// Field numbers of the parts of pds.v1.PortfolioDistribution a Summary reads (see proto/pds/v1/portfolio.proto).
const (
	fieldDataType        = 3 // PortfolioDistribution.data_type
	fieldData            = 4 // PortfolioDistribution.data
	fieldRouting         = 5 // PortfolioDistribution.routing
	fieldPortfolioID     = 1 // PortfolioData.portfolio_id
	fieldRoutingKey      = 2 // RoutingInfo.routing_key
	fieldTargetWorkflows = 3 // RoutingInfo.target_workflows
	fieldPriority        = 4 // RoutingInfo.priority
)

// errNotSummarizable: the encoding is malformed, or holds more target workflows than a Summary keeps.
// The caller decodes the event instead, which reports a malformed one.
var errNotSummarizable = errors.New("event encoding cannot be summarized")

// Summary is what workflow targeting and the native filters (data types, portfolio ids, routing-key
// patterns, minimum priority) read of an event, taken from its protobuf encoding without decoding the
// rest. A delivery path that sees every event of a topic uses it to skip the events a subscription does
// not take at a fraction of the cost of decoding them. Its byte slices alias the encoding.
type Summary struct {
	DataType    pdsv1.PortfolioDataType
	Priority    int32
	PortfolioID []byte
	RoutingKey  []byte

	targets    [routing.MaxTargetWorkflows][]byte
	numTargets int
}

// Summarize reads a Summary from an encoded pds.v1.PortfolioDistribution with protobuf's decoding rules
// (the last value of a scalar wins, repeated embedded messages merge, unknown fields are skipped). It
// fails on a malformed encoding and on an event with more than routing.MaxTargetWorkflows targets (which
// Normalize never lets through); decode the event then. It does not allocate.
func Summarize(encoded []byte, s *Summary) error {
	*s = Summary{}
	return scanFields(encoded, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
		switch {
		case num == fieldDataType && typ == protowire.VarintType:
			s.DataType = pdsv1.PortfolioDataType(int32(v))
		case num == fieldData && typ == protowire.BytesType:
			return scanFields(b, func(num protowire.Number, typ protowire.Type, _ uint64, b []byte) error {
				if num == fieldPortfolioID && typ == protowire.BytesType {
					s.PortfolioID = b
				}
				return nil
			})
		case num == fieldRouting && typ == protowire.BytesType:
			return scanFields(b, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
				switch {
				case num == fieldRoutingKey && typ == protowire.BytesType:
					s.RoutingKey = b
				case num == fieldTargetWorkflows && typ == protowire.BytesType:
					if s.numTargets == len(s.targets) {
						return errNotSummarizable
					}
					s.targets[s.numTargets] = b
					s.numTargets++
				case num == fieldPriority && typ == protowire.VarintType:
					s.Priority = int32(v)
				}
				return nil
			})
		}
		return nil
	})
}

// Targets returns the event's target workflows as stored, none when it names none (then it targets every
// workflow). The slices alias the encoded event and s.
func (s *Summary) Targets() [][]byte {
	return s.targets[:s.numTargets]
}

// TargetsWorkflow is routing.TargetsWorkflow for the summarized event.
func (s *Summary) TargetsWorkflow(workflow string) bool {
	if s.numTargets == 0 {
		return true
	}
	for _, t := range s.targets[:s.numTargets] {
		if string(t) == workflow {
			return true
		}
	}
	return false
}

// scanFields calls visit for each field of one message encoding: v holds a varint's value, b a
// length-delimited field's bytes; other wire types are skipped.
func scanFields(m []byte, visit func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error) error {
	for len(m) > 0 {
		num, typ, n := protowire.ConsumeTag(m)
		if n < 0 {
			return errNotSummarizable
		}
		m = m[n:]
		var v uint64
		var b []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(m)
		case protowire.BytesType:
			b, n = protowire.ConsumeBytes(m)
		default:
			n = protowire.ConsumeFieldValue(num, typ, m)
		}
		if n < 0 {
			return errNotSummarizable
		}
		m = m[n:]
		if err := visit(num, typ, v, b); err != nil {
			return err
		}
	}
	return nil
}

// MatchSummary applies the native filters to a summarized event. decided is false only when they let it
// through and a CEL expression remains: then call Match on the decoded event. It does not allocate.
func (f *Filter) MatchSummary(s *Summary) (match, decided bool) {
	if s.Priority < f.minPriority {
		return false, true
	}
	if f.dataTypes != 0 {
		t := s.DataType
		if t < 0 || t >= 64 || f.dataTypes&(1<<uint(t)) == 0 {
			return false, true
		}
	}
	if f.portfolioIDs != nil {
		if _, ok := f.portfolioIDs[string(s.PortfolioID)]; !ok {
			return false, true
		}
	}
	// The patterns only read the key during the call, so a view of the encoding's bytes is safe and
	// saves copying the key for every event of the topic.
	if len(f.patterns) > 0 && !f.matchRoutingKey(unsafe.String(unsafe.SliceData(s.RoutingKey), len(s.RoutingKey))) {
		return false, true
	}
	if f.cel != nil {
		return true, false
	}
	return true, true
}
