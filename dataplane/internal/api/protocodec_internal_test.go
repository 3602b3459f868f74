package api

import (
	"bytes"
	"testing"

	"github.com/pds-platform/pds/common/fastproto"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/dataplane/internal/eventgen"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// publishRequestOf encodes a PublishRequest of n events of every data type, as producers send them.
func publishRequestOf(tb testing.TB, n int) []byte {
	tb.Helper()
	gen := eventgen.New(eventgen.Options{Portfolios: 100, Seed: 1})
	req := &pdsv1.PublishRequest{}
	for range n {
		req.Events = append(req.Events, gen.Next())
	}
	encoded, err := proto.Marshal(req)
	if err != nil {
		tb.Fatal(err)
	}
	return encoded
}

// Publish requests are decoded by eventwire, not proto.Unmarshal: each event, encoded as Publish stores it,
// must be the event proto.Unmarshal decodes, unknown fields included, whatever the message held before.
func TestStreamProtoCodecDecodesPublishRequestsAsProtoUnmarshalDoes(t *testing.T) {
	t.Parallel()
	encoded := publishRequestOf(t, 50)
	// A 51st event holding only a field of a newer producer's schema, and such a field in the request itself.
	unknown := protowire.AppendTag(nil, 99, protowire.BytesType)
	unknown = protowire.AppendString(unknown, "from a newer schema")
	newerEvent := protowire.AppendTag(nil, 1, protowire.BytesType)
	newerEvent = protowire.AppendBytes(newerEvent, unknown)
	encoded = append(append(encoded, newerEvent...), unknown...)

	var want pdsv1.PublishRequest
	if err := proto.Unmarshal(encoded, &want); err != nil {
		t.Fatal(err)
	}
	got := &pdsv1.PublishRequest{Events: []*pdsv1.PortfolioDistribution{{EventId: "left over"}}}
	if err := (streamProtoCodec{}).Unmarshal(encoded, got); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if len(got.GetEvents()) != len(want.GetEvents()) || !bytes.Equal(got.ProtoReflect().GetUnknown(), want.ProtoReflect().GetUnknown()) {
		t.Fatalf("the codec decoded %d events and unknown fields %x; proto.Unmarshal %d and %x",
			len(got.GetEvents()), got.ProtoReflect().GetUnknown(), len(want.GetEvents()), want.ProtoReflect().GetUnknown())
	}
	for i, ev := range got.GetEvents() {
		stored, err := fastproto.Append(nil, ev)
		if err != nil {
			t.Fatal(err)
		}
		var decoded pdsv1.PortfolioDistribution
		if err := proto.Unmarshal(stored, &decoded); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&decoded, want.GetEvents()[i]) {
			t.Fatalf("event %d is stored as\n%v\nproto.Unmarshal decodes\n%v", i, &decoded, want.GetEvents()[i])
		}
	}
	events := want.GetEvents()
	if len(events) != 51 || len(events[50].ProtoReflect().GetUnknown()) == 0 || len(want.ProtoReflect().GetUnknown()) == 0 {
		t.Fatalf("test request: %d events; want 51, with unknown fields in the last one and in the request", len(events))
	}
	if err := (streamProtoCodec{}).Unmarshal(encoded[:len(encoded)-3], &pdsv1.PublishRequest{}); err == nil {
		t.Error("a truncated PublishRequest decoded without an error")
	}
}

// BenchmarkDecodePublishRequest decodes a PublishRequest of 1,000 events as Publish receives it, with
// protobuf's reflection-based decoder and with the codec's (eventwire); ns/event is per event.
func BenchmarkDecodePublishRequest(b *testing.B) {
	encoded := publishRequestOf(b, 1000)
	decoders := []struct {
		name   string
		decode func([]byte, *pdsv1.PublishRequest) error
	}{
		{name: "proto.Unmarshal", decode: func(data []byte, req *pdsv1.PublishRequest) error { return proto.Unmarshal(data, req) }},
		{name: "codec", decode: func(data []byte, req *pdsv1.PublishRequest) error { return (streamProtoCodec{}).Unmarshal(data, req) }},
	}
	for _, d := range decoders {
		b.Run("decoder="+d.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := d.decode(encoded, new(pdsv1.PublishRequest)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/event")
		})
	}
}
