package api

import (
	"net/http"
	"testing"
)

// Only streams whose messages go out in protobuf may get events left encoded: a JSON stream would lose them.
func TestSendsProtoByContentType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		contentType string
		want        bool
	}{
		{"application/grpc", true},
		{"application/grpc+proto", true},
		{"application/grpc-web+proto", true},
		{"application/connect+proto", true},
		{"application/grpc+json", false},
		{"application/grpc-web+json", false},
		{"application/connect+json", false},
		{"application/json", false},
		{"", false},
	}
	for _, tt := range tests {
		header := http.Header{}
		if tt.contentType != "" {
			header.Set("Content-Type", tt.contentType)
		}
		if got := sendsProto(header); got != tt.want {
			t.Errorf("sendsProto(Content-Type %q) = %v, want %v", tt.contentType, got, tt.want)
		}
	}
}
