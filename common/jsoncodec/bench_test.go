package jsoncodec_test

import (
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
