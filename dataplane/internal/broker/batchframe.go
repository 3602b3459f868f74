package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A batch frame is the body of one engine message holding records of one topic, in publish order:
//
//	version byte (2) | record count uint32 big-endian | records
//	record = flags byte | uvarint partition | uvarint len(key) | key | uvarint len(event id) | event id |
//	         uvarint len(value) | value
//
// Flag recordCopy marks a record that is also stored under another workflow's subject (it targets several
// workflows, see EmbeddedBroker.Publish): a consumer that reads every subject skips it and takes the
// primary copy. Version 1 frames, written before records were routed by workflow, have no flags byte;
// they are still read.
const (
	batchFrameVersion1   = 1
	batchFrameVersion    = 2
	batchFrameHeaderSize = 5
)

// recordFlags of a version 2 frame.
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
	return 1 + uvarintLen(r.Partition) + uvarintLen(len(r.Key)) + len(r.Key) + uvarintLen(len(r.EventID)) + len(r.EventID) +
		uvarintLen(len(r.Value)) + len(r.Value)
}

func appendRecord(buf []byte, r *Record, flags byte) []byte {
	buf = append(buf, flags)
	buf = binary.AppendUvarint(buf, uint64(r.Partition))
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

// decodeBatchFrame splits a frame into its records; copies[i] reports flag recordCopy of record i (copies
// is nil when no record has it). Values alias data.
func decodeBatchFrame(data []byte) (records []Record, copies []bool, err error) {
	if len(data) < batchFrameHeaderSize || (data[0] != batchFrameVersion && data[0] != batchFrameVersion1) {
		return nil, nil, fmt.Errorf("%w: bad header", errBadBatchFrame)
	}
	hasFlags := data[0] == batchFrameVersion
	count := int(binary.BigEndian.Uint32(data[1:batchFrameHeaderSize]))
	rest := data[batchFrameHeaderSize:]
	// Each record takes at least 4 bytes, which bounds a corrupt count before allocating.
	if count > len(rest)/4+1 {
		return nil, nil, fmt.Errorf("%w: count %d exceeds frame size %d", errBadBatchFrame, count, len(data))
	}
	records = make([]Record, count)
	for i := range records {
		if hasFlags {
			if len(rest) == 0 {
				return nil, nil, fmt.Errorf("%w: record %d flags", errBadBatchFrame, i)
			}
			if rest[0]&recordCopy != 0 {
				if copies == nil {
					copies = make([]bool, count)
				}
				copies[i] = true
			}
			rest = rest[1:]
		}
		var key, eventID, value []byte
		partition, used := binary.Uvarint(rest)
		if used <= 0 || partition > 1<<31 {
			return nil, nil, fmt.Errorf("%w: record %d partition", errBadBatchFrame, i)
		}
		rest = rest[used:]
		var ok bool
		if key, rest, ok = readChunk(rest); !ok {
			return nil, nil, fmt.Errorf("%w: record %d key", errBadBatchFrame, i)
		}
		if eventID, rest, ok = readChunk(rest); !ok {
			return nil, nil, fmt.Errorf("%w: record %d event id", errBadBatchFrame, i)
		}
		if value, rest, ok = readChunk(rest); !ok {
			return nil, nil, fmt.Errorf("%w: record %d value", errBadBatchFrame, i)
		}
		records[i] = Record{Partition: int(partition), Key: string(key), EventID: string(eventID), Value: value}
	}
	if len(rest) != 0 {
		return nil, nil, fmt.Errorf("%w: %d trailing bytes", errBadBatchFrame, len(rest))
	}
	return records, copies, nil
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
