package eventwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// CheckDetails walks encoded details (a Details result): valid reports whether every string is UTF-8 and
// every floating-point number finite; err says what the generated decoder would reject (truncated
// fields, a known field of the wrong wire type).
func CheckDetails(member protoreflect.FieldDescriptor, field []byte) (valid bool, err error) {
	shape := detailsShapes[member.Number()]
	if shape == nil {
		return false, fmt.Errorf("%s is not a details member", member.FullName())
	}
	_, _, n := protowire.ConsumeTag(field)
	if n < 0 {
		return false, protowire.ParseError(n)
	}
	v, m := protowire.ConsumeBytes(field[n:])
	if m < 0 {
		return false, protowire.ParseError(m)
	}
	return shape.check(v)
}

// messageShape is what checking needs of a message type: its fields by number, so the walk does not
// look fields up in descriptors.
type messageShape struct {
	fields []fieldShape // index: field number; kind 0 for numbers the message does not have
}

type fieldShape struct {
	number  protowire.Number
	name    protoreflect.Name
	kind    protoreflect.Kind
	list    bool
	message *messageShape // for message fields
}

// detailsShapes are the shapes of the details members' messages, by member number.
var detailsShapes = func() map[protowire.Number]*messageShape {
	shapes := map[protowire.Number]*messageShape{}
	made := map[protoreflect.FullName]*messageShape{}
	for i := range detailsFields.Len() {
		fd := detailsFields.Get(i)
		shapes[fd.Number()] = shapeOf(fd.Message(), made)
	}
	return shapes
}()

func shapeOf(md protoreflect.MessageDescriptor, made map[protoreflect.FullName]*messageShape) *messageShape {
	if shape, ok := made[md.FullName()]; ok {
		return shape
	}
	shape := &messageShape{}
	made[md.FullName()] = shape // before the fields: a message may contain itself
	fields := md.Fields()
	maxNumber := protowire.Number(0)
	for i := range fields.Len() {
		maxNumber = max(maxNumber, fields.Get(i).Number())
	}
	shape.fields = make([]fieldShape, maxNumber+1)
	for i := range fields.Len() {
		fd := fields.Get(i)
		f := fieldShape{number: fd.Number(), name: fd.Name(), kind: fd.Kind(), list: fd.IsList()}
		if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
			f.message = shapeOf(fd.Message(), made)
		}
		shape.fields[fd.Number()] = f
	}
	return shape
}

func (s *messageShape) check(b []byte) (valid bool, err error) {
	valid = true
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return false, protowire.ParseError(n)
		}
		b = b[n:]
		if int(num) >= len(s.fields) || s.fields[num].kind == 0 {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return false, protowire.ParseError(m)
			}
			b = b[m:]
			continue
		}
		f := &s.fields[num]
		ok, m, err := f.check(typ, b)
		if err != nil {
			return false, fmt.Errorf("%s: %w", f.name, err)
		}
		valid = valid && ok
		b = b[m:]
	}
	return valid, nil
}

// check checks the field's value at the front of b, encoded with wire type typ, and returns its length.
func (f *fieldShape) check(typ protowire.Type, b []byte) (valid bool, m int, err error) {
	want := wireType(f.kind)
	if typ == protowire.BytesType && want != protowire.BytesType && f.list {
		return checkPacked(f.kind, b)
	}
	if typ != want {
		return false, 0, fmt.Errorf("wire type %d, want %d", typ, want)
	}
	switch f.kind {
	case protoreflect.StringKind:
		v, m := consumeBytesValue(b)
		if m < 0 {
			return false, 0, protowire.ParseError(m)
		}
		return utf8.Valid(v), m, nil
	case protoreflect.MessageKind:
		v, m := consumeBytesValue(b)
		if m < 0 {
			return false, 0, protowire.ParseError(m)
		}
		valid, err := f.message.check(v)
		return valid, m, err
	case protoreflect.DoubleKind:
		if len(b) < 8 {
			return false, 0, io.ErrUnexpectedEOF
		}
		return finite(math.Float64frombits(binary.LittleEndian.Uint64(b))), 8, nil
	case protoreflect.FloatKind:
		v, m := protowire.ConsumeFixed32(b)
		if m < 0 {
			return false, 0, protowire.ParseError(m)
		}
		return finite(float64(math.Float32frombits(v))), m, nil
	}
	// Other numbers, and groups (no details message has one), need no check.
	m = protowire.ConsumeFieldValue(f.number, typ, b)
	if m < 0 {
		return false, 0, protowire.ParseError(m)
	}
	return true, m, nil
}

// checkPacked checks a packed list of numbers.
func checkPacked(kind protoreflect.Kind, b []byte) (valid bool, m int, err error) {
	v, m := protowire.ConsumeBytes(b)
	if m < 0 {
		return false, 0, protowire.ParseError(m)
	}
	valid = true
	switch wireType(kind) {
	case protowire.Fixed64Type:
		if len(v)%8 != 0 {
			return false, 0, errors.New("packed list length is not a multiple of 8")
		}
		for ; kind == protoreflect.DoubleKind && len(v) > 0; v = v[8:] {
			valid = valid && finite(math.Float64frombits(binary.LittleEndian.Uint64(v)))
		}
	case protowire.Fixed32Type:
		if len(v)%4 != 0 {
			return false, 0, errors.New("packed list length is not a multiple of 4")
		}
		for ; kind == protoreflect.FloatKind && len(v) > 0; v = v[4:] {
			valid = valid && finite(float64(math.Float32frombits(binary.LittleEndian.Uint32(v))))
		}
	default:
		for len(v) > 0 {
			_, k := protowire.ConsumeVarint(v)
			if k < 0 {
				return false, 0, protowire.ParseError(k)
			}
			v = v[k:]
		}
	}
	return valid, m, nil
}

// consumeTag is protowire.ConsumeTag with the one-byte tags of small field numbers read inline: the
// walk reads every field's tag.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	if b[0] < 0x80 && b[0]>>3 != 0 {
		return protowire.Number(b[0] >> 3), protowire.Type(b[0] & 7), 1
	}
	return protowire.ConsumeTag(b)
}

// consumeBytesValue is protowire.ConsumeBytes with one-byte lengths read inline.
func consumeBytesValue(b []byte) ([]byte, int) {
	if len(b) > 0 && b[0] < 0x80 {
		n := 1 + int(b[0])
		if n > len(b) {
			return nil, -1 // as protowire: io.ErrUnexpectedEOF
		}
		return b[1:n], n
	}
	return protowire.ConsumeBytes(b)
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// wireType is the wire type of kind's singular values.
func wireType(kind protoreflect.Kind) protowire.Type {
	switch kind {
	case protoreflect.Sfixed32Kind, protoreflect.Fixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Sfixed64Kind, protoreflect.Fixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	default:
		return protowire.VarintType
	}
}
