package jsoncodec_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/common/routing"
)

// realisticEvent is the specification's example with state details (currency, cash): about 450 bytes as JSON.
func realisticEvent(b *testing.B) *pdsv1.PortfolioDistribution {
	ev := specExampleEvent()
	ev.Data.Details = &pdsv1.PortfolioData_PortfolioState{PortfolioState: &pdsv1.PortfolioStateDetails{
		Currency: "USD", CashBalance: 25000,
	}}
	if err := routing.Normalize(ev, "", time.Now()); err != nil {
		b.Fatal(err)
	}
	return ev
}

func BenchmarkMarshalDistributedJSON(b *testing.B) {
	msg := routing.ToDistributed(realisticEvent(b))
	out, err := jsoncodec.Marshal(msg)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(out)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jsoncodec.Marshal(msg); err != nil {
			b.Fatal(err)
		}
	}
	// After the loop: b.Loop resets user metrics when it starts timing.
	b.ReportMetric(float64(len(out)), "json-bytes")
}

// BenchmarkMarshalStoredProto is the encoding the broker stores: the normalized PortfolioDistribution.
func BenchmarkMarshalStoredProto(b *testing.B) {
	ev := realisticEvent(b)
	out, err := proto.Marshal(ev)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(out)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := proto.Marshal(ev); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(out)), "proto-bytes")
}

func BenchmarkUnmarshalStoredProto(b *testing.B) {
	raw, err := proto.Marshal(realisticEvent(b))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		var ev pdsv1.PortfolioDistribution
		if err := proto.Unmarshal(raw, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMarshalStreamMessageJSON is what a JSON subscriber (Connect JSON, WebSocket) costs per
// message: a PortfolioMessage of delivered events with their ack ids.
func BenchmarkMarshalStreamMessageJSON(b *testing.B) {
	for _, events := range []int{1, 100} {
		b.Run(fmt.Sprintf("events=%d", events), func(b *testing.B) {
			ev := routing.ToDistributed(realisticEvent(b))
			msg := &pdsv1.PortfolioMessage{Events: make([]*pdsv1.DeliveredEvent, events)}
			for i := range msg.Events {
				msg.Events[i] = &pdsv1.DeliveredEvent{
					AckId:           fmt.Sprintf("kq3c5xnd7mv2pa4s6ebz.%x-%d", 1000+i, i),
					Event:           ev,
					DataType:        pdsv1.PortfolioDataType_PORTFOLIO_STATE,
					DeliveryAttempt: 1,
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := jsoncodec.Marshal(msg); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*events)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
