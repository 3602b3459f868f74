package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A batch frame is the body of one engine message holding records of one topic, in publish order:
//
//	version byte (1) | record count uint32 big-endian | records
//	record = uvarint partition | uvarint len(key) | key | uvarint len(event id) | event id |
//	         uvarint len(value) | value
const (
	batchFrameVersion    = 1
	batchFrameHeaderSize = 5
)

var errBadBatchFrame = errors.New("malformed batch frame")

// newBatchFrame returns a buffer holding an empty frame's header; fill records with appendRecord and
// finish it with sealBatchFrame.
func newBatchFrame(capacity int) []byte {
	buf := make([]byte, batchFrameHeaderSize, max(capacity, batchFrameHeaderSize))
	buf[0] = batchFrameVersion
	return buf
}

func encodedRecordSize(r *Record) int {
	return uvarintLen(r.Partition) + uvarintLen(len(r.Key)) + len(r.Key) + uvarintLen(len(r.EventID)) + len(r.EventID) +
		uvarintLen(len(r.Value)) + len(r.Value)
}

func appendRecord(buf []byte, r *Record) []byte {
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

// decodeBatchFrame splits a frame into its records. Values alias data.
func decodeBatchFrame(data []byte) ([]Record, error) {
	if len(data) < batchFrameHeaderSize || data[0] != batchFrameVersion {
		return nil, fmt.Errorf("%w: bad header", errBadBatchFrame)
	}
	count := int(binary.BigEndian.Uint32(data[1:batchFrameHeaderSize]))
	rest := data[batchFrameHeaderSize:]
	// Each record takes at least 4 bytes, which bounds a corrupt count before allocating.
	if count > len(rest)/4+1 {
		return nil, fmt.Errorf("%w: count %d exceeds frame size %d", errBadBatchFrame, count, len(data))
	}
	records := make([]Record, count)
	for i := range records {
		var key, eventID, value []byte
		partition, used := binary.Uvarint(rest)
		if used <= 0 || partition > 1<<31 {
			return nil, fmt.Errorf("%w: record %d partition", errBadBatchFrame, i)
		}
		rest = rest[used:]
		var ok bool
		if key, rest, ok = readChunk(rest); !ok {
			return nil, fmt.Errorf("%w: record %d key", errBadBatchFrame, i)
		}
		if eventID, rest, ok = readChunk(rest); !ok {
			return nil, fmt.Errorf("%w: record %d event id", errBadBatchFrame, i)
		}
		if value, rest, ok = readChunk(rest); !ok {
			return nil, fmt.Errorf("%w: record %d value", errBadBatchFrame, i)
		}
		records[i] = Record{Partition: int(partition), Key: string(key), EventID: string(eventID), Value: value}
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", errBadBatchFrame, len(rest))
	}
	return records, nil
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
