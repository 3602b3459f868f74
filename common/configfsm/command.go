package configfsm

import (
	"errors"
	"fmt"

	configv1 "github.com/pds-platform/pds/common/gen/pds/config/v1"
	"google.golang.org/protobuf/proto"
)

// MaxCommandBytes bounds one raft log entry; an admin write larger than this is refused before it is
// proposed.
const MaxCommandBytes = 1 << 20

// ErrCommandTooLarge is returned by EncodeCommand for a payload over MaxCommandBytes.
var ErrCommandTooLarge = errors.New("config command too large")

// EncodeCommand frames a command as one type byte followed by the protobuf payload.
func EncodeCommand(kind configv1.CommandType, payload proto.Message) ([]byte, error) {
	if kind <= 0 || kind > 255 {
		return nil, fmt.Errorf("encode config command: type %d out of range", kind)
	}
	body, err := proto.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode config command %s: %w", kind, err)
	}
	if len(body)+1 > MaxCommandBytes {
		return nil, fmt.Errorf("encode config command %s: %d bytes: %w", kind, len(body)+1, ErrCommandTooLarge)
	}
	return append([]byte{byte(kind)}, body...), nil
}

// DecodeCommandType splits a framed command into its type and payload bytes.
func DecodeCommandType(data []byte) (configv1.CommandType, []byte, error) {
	if len(data) == 0 {
		return 0, nil, errors.New("decode config command: empty entry")
	}
	return configv1.CommandType(data[0]), data[1:], nil
}
