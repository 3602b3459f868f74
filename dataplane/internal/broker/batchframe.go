package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A batch frame is the body of one engine message holding records of one topic, in publish order:
//
//	version byte (3) | record count uint32 big-endian | records
//	record = uvarint partition | uvarint len(workflows) | (uvarint len(workflow) | workflow)* |
//	         uvarint len(key) | key | uvarint len(event id) | event id | uvarint len(value) | value
//
// The workflows are the record's target workflows; none means every subscription's. Every record of a
// topic goes into one frame per write, whatever it targets, so a write costs one fsync however many
// workflows its records target; a consumer reads the workflows to leave out other workflows' records
// without decoding anything else (recordSelector).
//
// Frames written by earlier versions are still read: version 1 has no workflows; version 2 has a flags
// byte (recordCopy) before each record and no workflows, its records having been stored once per target
// workflow under a subject of that workflow's.
const (
	batchFrameVersion1   = 1
	batchFrameVersion2   = 2
	batchFrameVersion    = 3
	batchFrameHeaderSize = 5
)

// recordCopy, a version 2 record flag, marks a record also stored under another workflow's subject: a
// consumer that reads every subject skips it and takes the primary copy.
const recordCopy byte = 1

var errBadBatchFrame = errors.New("malformed batch frame")

// newBatchFrame returns a buffer holding an empty frame's header; fill records with appendRecord and
// finish it with sealBatchFrame.
func newBatchFrame(capacity int) []byte {
	buf := make([]byte, batchFrameHeaderSize, max(capacity, batchFrameHeaderSize))
	buf[0] = batchFrameVersion
	return buf
}

func encodedRecordSize(r *Record) int {
	size := uvarintLen(r.Partition) + uvarintLen(len(r.TargetWorkflows)) + uvarintLen(len(r.Key)) + len(r.Key) +
		uvarintLen(len(r.EventID)) + len(r.EventID) + uvarintLen(len(r.Value)) + len(r.Value)
	for _, w := range r.TargetWorkflows {
		size += uvarintLen(len(w)) + len(w)
	}
	return size
}

func appendRecord(buf []byte, r *Record) []byte {
	buf = binary.AppendUvarint(buf, uint64(r.Partition))
	buf = binary.AppendUvarint(buf, uint64(len(r.TargetWorkflows)))
	for _, w := range r.TargetWorkflows {
		buf = binary.AppendUvarint(buf, uint64(len(w)))
		buf = append(buf, w...)
	}
	buf = binary.AppendUvarint(buf, uint64(len(r.Key)))
	buf = append(buf, r.Key...)
	buf = binary.AppendUvarint(buf, uint64(len(r.EventID)))
	buf = append(buf, r.EventID...)
	buf = binary.AppendUvarint(buf, uint64(len(r.Value)))
	return append(buf, r.Value...)
}

func sealBatchFrame(buf []byte, count int) {
	binary.BigEndian.PutUint32(buf[1:batchFrameHeaderSize], uint32(count))
}

// recordSelector chooses the records of a frame a consumer takes.
type recordSelector struct {
	// workflow, when set, takes only records that target it or no workflow at all.
	workflow string
	// skipCopies leaves out version 2 records flagged recordCopy.
	skipCopies bool
}

func (s recordSelector) selectsAll() bool { return s.workflow == "" && !s.skipCopies }

// decodedFrame holds the selected records of a frame. Values alias the frame.
type decodedFrame struct {
	records []Record
	// indexes[i] is the position of records[i] in the frame; nil when every record was selected.
	indexes []int32
	// total counts the frame's records, selected or not.
	total int
}

// frameIndex returns the position in the frame of records[i].
func (d *decodedFrame) frameIndex(i int) int {
	if d.indexes == nil {
		return i
	}
	return int(d.indexes[i])
}

// decodeBatchFrame checks a whole frame and returns the records sel selects. A record left out costs a
// walk over its length prefixes: no allocation, no copy.
func decodeBatchFrame(data []byte, sel recordSelector) (decodedFrame, error) {
	if len(data) < batchFrameHeaderSize {
		return decodedFrame{}, fmt.Errorf("%w: bad header", errBadBatchFrame)
	}
	version := data[0]
	if version != batchFrameVersion && version != batchFrameVersion2 && version != batchFrameVersion1 {
		return decodedFrame{}, fmt.Errorf("%w: unknown version %d", errBadBatchFrame, version)
	}
	count := int(binary.BigEndian.Uint32(data[1:batchFrameHeaderSize]))
	rest := data[batchFrameHeaderSize:]
	// Each record takes at least 4 bytes, which bounds a corrupt count before allocating.
	if count > len(rest)/4+1 {
		return decodedFrame{}, fmt.Errorf("%w: count %d exceeds frame size %d", errBadBatchFrame, count, len(data))
	}
	out := decodedFrame{total: count}
	if sel.selectsAll() {
		out.records = make([]Record, 0, count)
	} else {
		out.indexes = make([]int32, 0, count)
	}
	for i := range count {
		selected := true
		if version == batchFrameVersion2 {
			if len(rest) == 0 {
				return decodedFrame{}, fmt.Errorf("%w: record %d flags", errBadBatchFrame, i)
			}
			selected = !(sel.skipCopies && rest[0]&recordCopy != 0)
			rest = rest[1:]
		}
		partition, used := binary.Uvarint(rest)
		if used <= 0 || partition > 1<<31 {
			return decodedFrame{}, fmt.Errorf("%w: record %d partition", errBadBatchFrame, i)
		}
		rest = rest[used:]
		if version == batchFrameVersion {
			var ok bool
			if rest, ok = skipWorkflows(rest, sel.workflow, &selected); !ok {
				return decodedFrame{}, fmt.Errorf("%w: record %d workflows", errBadBatchFrame, i)
			}
		}
		var key, eventID, value []byte
		var ok bool
		if key, rest, ok = readChunk(rest); !ok {
			return decodedFrame{}, fmt.Errorf("%w: record %d key", errBadBatchFrame, i)
		}
		if eventID, rest, ok = readChunk(rest); !ok {
			return decodedFrame{}, fmt.Errorf("%w: record %d event id", errBadBatchFrame, i)
		}
		if value, rest, ok = readChunk(rest); !ok {
			return decodedFrame{}, fmt.Errorf("%w: record %d value", errBadBatchFrame, i)
		}
		if !selected {
			continue
		}
		out.records = append(out.records, Record{Partition: int(partition), Key: string(key), EventID: string(eventID), Value: value})
		if out.indexes != nil {
			out.indexes = append(out.indexes, int32(i))
		}
	}
	if len(rest) != 0 {
		return decodedFrame{}, fmt.Errorf("%w: %d trailing bytes", errBadBatchFrame, len(rest))
	}
	if len(out.records) == count {
		out.indexes = nil
	}
	return out, nil
}

// skipWorkflows reads a record's target workflows. When workflow is set and the record targets some
// workflows but not that one, it clears *selected.
func skipWorkflows(b []byte, workflow string, selected *bool) (rest []byte, ok bool) {
	n, used := binary.Uvarint(b)
	if used <= 0 || n > uint64(len(b)-used) {
		return nil, false
	}
	rest = b[used:]
	targetsWorkflow := false
	for range n {
		var name []byte
		if name, rest, ok = readChunk(rest); !ok {
			return nil, false
		}
		targetsWorkflow = targetsWorkflow || string(name) == workflow
	}
	if workflow != "" && n > 0 && !targetsWorkflow {
		*selected = false
	}
	return rest, true
}

func readChunk(b []byte) (chunk, rest []byte, ok bool) {
	n, used := binary.Uvarint(b)
	if used <= 0 || n > uint64(len(b)-used) {
		return nil, nil, false
	}
	end := used + int(n)
	return b[used:end:end], b[end:], true
}

func uvarintLen(n int) int {
	size := 1
	for v := uint64(n); v >= 0x80; v >>= 7 {
		size++
	}
	return size
}
