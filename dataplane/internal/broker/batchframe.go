package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// A batch frame is the body of one engine message holding records of one topic, in publish order:
//
//	version byte (4) | record count uint32 big-endian | records | index | uint32 big-endian len(index)
//	record = uvarint partition | uvarint len(key) | key | uvarint len(event id) | event id | uvarint len(value) | value
//	index  = uvarint number of entries | entry*
//	entry  = uvarint len(workflow) | workflow | uvarint n | uvarint len(pairs) | pairs
//	pairs  = n × (uvarint record number delta | uvarint record offset delta)
//
// Every record of a topic goes into one frame per write, whatever it targets, so a write costs one fsync
// however many workflows its records target. The index lists, per target workflow, the records that
// target it (their numbers and their offsets in the frame, each as the difference from the entry's
// previous one); the entry of workflow "" lists the records that target none, which every subscription
// takes. A consumer of one workflow reads its two entries and decodes those records only, never touching
// the bytes of the others (recordSelector): with ten subscriptions on a topic, walking every record of
// every frame was 6.6% of the data plane's CPU.
//
// Frames written by earlier versions are still read: version 1 has no workflows; version 2 has a flags
// byte (recordCopy) before each record and no workflows, its records having been stored once per target
// workflow under a subject of that workflow's; version 3 has no index and each record's workflows after
// its partition (uvarint count, then uvarint length and name for each).
const (
	batchFrameVersion1    = 1
	batchFrameVersion2    = 2
	batchFrameVersion3    = 3
	batchFrameVersion     = 4
	batchFrameHeaderSize  = 5
	batchFrameTrailerSize = 4
	// batchFrameOverhead bounds a frame's bytes besides its records' (see encodedRecordSize).
	batchFrameOverhead = batchFrameHeaderSize + binary.MaxVarintLen32 + batchFrameTrailerSize
)

// recordCopy, a version 2 record flag, marks a record also stored under another workflow's subject: a
// consumer that reads every subject skips it and takes the primary copy.
const recordCopy byte = 1

var (
	errBadBatchFrame = errors.New("malformed batch frame")
	// errNewerBatchFrame: the frame's version is later than this build knows, so a later build of PDS wrote
	// it. It is not malformed, and must wait for that build.
	errNewerBatchFrame = errors.New("batch frame written by a later version of PDS")
)

// frameBuilder writes a frame: records in publish order, and the index alongside.
type frameBuilder struct {
	buf     []byte
	count   int
	entries map[string]*indexEntry
	order   []*indexEntry // first-seen order, so equal batches make equal frames
}

// indexEntry is one workflow's entry of a frame's index, its pairs encoded as records are added.
type indexEntry struct {
	workflow               string
	n                      int
	pairs                  []byte
	lastRecord, lastOffset int
}

// newFrameBuilder starts a frame with room for capacity bytes.
func newFrameBuilder(capacity int) *frameBuilder {
	buf := make([]byte, batchFrameHeaderSize, max(capacity, batchFrameHeaderSize))
	buf[0] = batchFrameVersion
	return &frameBuilder{buf: buf}
}

// encodedRecordSize bounds the bytes r adds to a frame: its encoding, and its share of the index as if
// each of its workflows had an entry of its own.
func encodedRecordSize(r *Record) int {
	// An entry's n and len(pairs), and one pair: four uvarints of at most 32 bits.
	const entryBound = 4 * binary.MaxVarintLen32
	size := uvarintLen(r.Partition) + uvarintLen(len(r.Key)) + len(r.Key) +
		uvarintLen(len(r.EventID)) + len(r.EventID) + uvarintLen(len(r.Value)) + len(r.Value)
	if len(r.TargetWorkflows) == 0 {
		return size + uvarintLen(0) + entryBound
	}
	for _, w := range r.TargetWorkflows {
		size += uvarintLen(len(w)) + len(w) + entryBound
	}
	return size
}

func (f *frameBuilder) add(r *Record) {
	offset := len(f.buf)
	f.buf = binary.AppendUvarint(f.buf, uint64(r.Partition))
	f.buf = binary.AppendUvarint(f.buf, uint64(len(r.Key)))
	f.buf = append(f.buf, r.Key...)
	f.buf = binary.AppendUvarint(f.buf, uint64(len(r.EventID)))
	f.buf = append(f.buf, r.EventID...)
	f.buf = binary.AppendUvarint(f.buf, uint64(len(r.Value)))
	f.buf = append(f.buf, r.Value...)
	if len(r.TargetWorkflows) == 0 {
		f.index("", offset)
	}
	for _, w := range r.TargetWorkflows {
		f.index(w, offset)
	}
	f.count++
}

// index lists the record being added, at offset, under workflow.
func (f *frameBuilder) index(workflow string, offset int) {
	e := f.entries[workflow]
	switch {
	case e == nil:
		if f.entries == nil {
			f.entries = map[string]*indexEntry{}
		}
		e = &indexEntry{workflow: workflow}
		f.entries[workflow] = e
		f.order = append(f.order, e)
	case e.n > 0 && e.lastRecord == f.count:
		return // the record names the workflow twice
	}
	e.pairs = binary.AppendUvarint(e.pairs, uint64(f.count-e.lastRecord))
	e.pairs = binary.AppendUvarint(e.pairs, uint64(offset-e.lastOffset))
	e.lastRecord, e.lastOffset = f.count, offset
	e.n++
}

// seal writes the header's count, the index and the trailer, and returns the frame.
func (f *frameBuilder) seal() []byte {
	binary.BigEndian.PutUint32(f.buf[1:batchFrameHeaderSize], uint32(f.count))
	indexStart := len(f.buf)
	f.buf = binary.AppendUvarint(f.buf, uint64(len(f.order)))
	for _, e := range f.order {
		f.buf = binary.AppendUvarint(f.buf, uint64(len(e.workflow)))
		f.buf = append(f.buf, e.workflow...)
		f.buf = binary.AppendUvarint(f.buf, uint64(e.n))
		f.buf = binary.AppendUvarint(f.buf, uint64(len(e.pairs)))
		f.buf = append(f.buf, e.pairs...)
	}
	f.buf = binary.BigEndian.AppendUint32(f.buf, uint32(len(f.buf)-indexStart))
	return f.buf
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

// decodeBatchFrame returns the records of a frame sel selects. It checks a whole frame of version 1 to 3,
// where a record left out costs a walk over its length prefixes; of version 4, everything it reads.
func decodeBatchFrame(data []byte, sel recordSelector) (decodedFrame, error) {
	if len(data) < batchFrameHeaderSize {
		return decodedFrame{}, fmt.Errorf("%w: bad header", errBadBatchFrame)
	}
	version := data[0]
	if version > batchFrameVersion {
		return decodedFrame{}, fmt.Errorf("%w: version %d, this build reads up to %d", errNewerBatchFrame, version, batchFrameVersion)
	}
	if version < batchFrameVersion1 {
		return decodedFrame{}, fmt.Errorf("%w: unknown version %d", errBadBatchFrame, version)
	}
	count := int(binary.BigEndian.Uint32(data[1:batchFrameHeaderSize]))
	if version == batchFrameVersion {
		return decodeIndexedFrame(data, count, sel.workflow)
	}
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
		if version == batchFrameVersion3 {
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

// decodeIndexedFrame decodes the records of a version 4 frame that a consumer of workflow takes: all of
// them when workflow is "", else those its index lists for workflow or for "" (no workflow), in frame order.
func decodeIndexedFrame(data []byte, count int, workflow string) (decodedFrame, error) {
	if len(data) < batchFrameHeaderSize+batchFrameTrailerSize {
		return decodedFrame{}, fmt.Errorf("%w: no index", errBadBatchFrame)
	}
	indexLen := uint64(binary.BigEndian.Uint32(data[len(data)-batchFrameTrailerSize:]))
	if indexLen > uint64(len(data)-batchFrameHeaderSize-batchFrameTrailerSize) {
		return decodedFrame{}, fmt.Errorf("%w: index of %d bytes in a frame of %d", errBadBatchFrame, indexLen, len(data))
	}
	indexStart := len(data) - batchFrameTrailerSize - int(indexLen)
	records := data[:indexStart] // offsets count from the frame's start
	// Each record takes at least 4 bytes, which bounds a corrupt count before allocating.
	if count > (indexStart-batchFrameHeaderSize)/4+1 {
		return decodedFrame{}, fmt.Errorf("%w: count %d exceeds frame size %d", errBadBatchFrame, count, len(data))
	}
	out := decodedFrame{total: count}
	if workflow == "" {
		out.records = make([]Record, 0, count)
		rest := records[batchFrameHeaderSize:]
		for i := range count {
			r, next, ok := readRecord(rest)
			if !ok {
				return decodedFrame{}, fmt.Errorf("%w: record %d", errBadBatchFrame, i)
			}
			out.records, rest = append(out.records, r), next
		}
		if len(rest) != 0 {
			return decodedFrame{}, fmt.Errorf("%w: %d bytes between the records and the index", errBadBatchFrame, len(rest))
		}
		return out, nil
	}
	everyone, mine, err := indexEntriesOf(data[indexStart:len(data)-batchFrameTrailerSize], workflow)
	if err != nil {
		return decodedFrame{}, err
	}
	out.records = make([]Record, 0, everyone.n+mine.n)
	out.indexes = make([]int32, 0, everyone.n+mine.n)
	last := -1
	for everyone.n > 0 || mine.n > 0 {
		next := &everyone
		if everyone.n == 0 || (mine.n > 0 && mine.peekRecord() < everyone.peekRecord()) {
			next = &mine
		}
		number, offset, ok := next.pop()
		if !ok || number <= last || number >= count || offset < batchFrameHeaderSize || offset >= indexStart {
			return decodedFrame{}, fmt.Errorf("%w: index entry for record %d at %d", errBadBatchFrame, number, offset)
		}
		r, _, ok := readRecord(records[offset:])
		if !ok {
			return decodedFrame{}, fmt.Errorf("%w: record %d", errBadBatchFrame, number)
		}
		out.records = append(out.records, r)
		out.indexes = append(out.indexes, int32(number))
		last = number
	}
	if len(out.records) == count {
		out.indexes = nil
	}
	return out, nil
}

// readRecord reads one version 4 record. Its Value aliases b.
func readRecord(b []byte) (_ Record, rest []byte, ok bool) {
	partition, used := binary.Uvarint(b)
	if used <= 0 || partition > 1<<31 {
		return Record{}, nil, false
	}
	var key, eventID, value []byte
	if key, rest, ok = readChunk(b[used:]); !ok {
		return Record{}, nil, false
	}
	if eventID, rest, ok = readChunk(rest); !ok {
		return Record{}, nil, false
	}
	if value, rest, ok = readChunk(rest); !ok {
		return Record{}, nil, false
	}
	return Record{Partition: int(partition), Key: string(key), EventID: string(eventID), Value: value}, rest, true
}

// indexPairs reads one index entry's (record number, offset) pairs in order.
type indexPairs struct {
	n                      int // pairs left
	pairs                  []byte
	lastRecord, lastOffset int
	read                   bool // whether a pair was read: every later record number must be larger
}

// peekRecord returns the number of the next record without consuming it; a malformed pair gives -1, which
// pop then reports.
func (p *indexPairs) peekRecord() int {
	delta, used := binary.Uvarint(p.pairs)
	if used <= 0 || delta > 1<<31 {
		return -1
	}
	return p.lastRecord + int(delta)
}

func (p *indexPairs) pop() (number, offset int, ok bool) {
	recordDelta, used := binary.Uvarint(p.pairs)
	if used <= 0 || recordDelta > 1<<31 || (p.read && recordDelta == 0) {
		return 0, 0, false
	}
	offsetDelta, used2 := binary.Uvarint(p.pairs[used:])
	if used2 <= 0 || offsetDelta > 1<<31 || (p.read && offsetDelta == 0) {
		return 0, 0, false
	}
	p.pairs = p.pairs[used+used2:]
	p.lastRecord += int(recordDelta)
	p.lastOffset += int(offsetDelta)
	p.n--
	p.read = true
	return p.lastRecord, p.lastOffset, true
}

// indexEntriesOf finds, in a version 4 index, the entries of workflow "" and of workflow (either may be
// missing: no pairs). It checks every entry's framing.
func indexEntriesOf(index []byte, workflow string) (everyone, mine indexPairs, err error) {
	entries, used := binary.Uvarint(index)
	if used <= 0 || entries > uint64(len(index)) {
		return indexPairs{}, indexPairs{}, fmt.Errorf("%w: index entry count", errBadBatchFrame)
	}
	rest := index[used:]
	for i := range entries {
		name, next, ok := readChunk(rest)
		if !ok {
			return indexPairs{}, indexPairs{}, fmt.Errorf("%w: index entry %d workflow", errBadBatchFrame, i)
		}
		n, used := binary.Uvarint(next)
		if used <= 0 || n > uint64(len(next)) {
			return indexPairs{}, indexPairs{}, fmt.Errorf("%w: index entry %d count", errBadBatchFrame, i)
		}
		pairs, next, ok := readChunk(next[used:])
		if !ok || n > uint64(len(pairs)) {
			return indexPairs{}, indexPairs{}, fmt.Errorf("%w: index entry %d pairs", errBadBatchFrame, i)
		}
		switch string(name) {
		case "":
			everyone = indexPairs{n: int(n), pairs: pairs}
		case workflow:
			mine = indexPairs{n: int(n), pairs: pairs}
		}
		rest = next
	}
	if len(rest) != 0 {
		return indexPairs{}, indexPairs{}, fmt.Errorf("%w: %d trailing bytes in the index", errBadBatchFrame, len(rest))
	}
	return everyone, mine, nil
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
