// Package fastproto encodes protobuf messages with the reflection-free methods protoc-gen-go-vtproto
// generates (common/gen), for the paths that encode every event: publishing, storing and the load tool.
// The output is byte for byte what proto.Marshal writes for the same message.
package fastproto

import (
	"slices"

	"google.golang.org/protobuf/proto"
)

// Message is what protoc-gen-go-vtproto generates for every message of common/gen.
type Message interface {
	SizeVT() int
	MarshalToSizedBufferVT(dst []byte) (int, error)
}

// Append appends m's encoding to dst, growing it at most once.
//
// Unlike proto.Marshal it does not check that strings are valid UTF-8: encode only values that were
// validated or that a protobuf decoder produced.
func Append(dst []byte, m Message) ([]byte, error) {
	n := m.SizeVT()
	dst = slices.Grow(dst, n)
	end := len(dst) + n
	// The generated encoder writes backwards from the end of exactly the space it sized.
	if _, err := m.MarshalToSizedBufferVT(dst[len(dst):end]); err != nil {
		return nil, err
	}
	return dst[:end], nil
}

// AppendMessage appends m's encoding to dst: with the generated methods when m has them, with
// proto.MarshalAppend for messages from outside common/gen.
func AppendMessage(dst []byte, m proto.Message) ([]byte, error) {
	if fast, ok := m.(Message); ok {
		return Append(dst, fast)
	}
	return proto.MarshalOptions{}.MarshalAppend(dst, m)
}
