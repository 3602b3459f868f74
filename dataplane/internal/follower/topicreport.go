package follower

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
)

// Limits the control plane enforces on ReportTopicStatus.
const (
	maxReportsPerRequest  = 1000
	maxReportMessageRunes = 2000
)

// TopicStatusReporter tells the control plane what this node's broker driver did with topics.
type TopicStatusReporter interface {
	// ReportTopicStatus sends the reports, newest outcome per topic. On error some or none may have been
	// stored; sending the same reports again is harmless. Called from one goroutine at a time.
	ReportTopicStatus(ctx context.Context, reports []*pdsv1.TopicStatusReport) error
}

// ClusterReporter sends topic reports through the control plane's ClusterService.
type ClusterReporter struct {
	client pdsv1connect.ClusterServiceClient
	nodeID string
}

var _ TopicStatusReporter = (*ClusterReporter)(nil)

// NewClusterReporter reports as node nodeID through client.
func NewClusterReporter(client pdsv1connect.ClusterServiceClient, nodeID string) (*ClusterReporter, error) {
	switch {
	case client == nil:
		return nil, errors.New("new cluster reporter: client is nil")
	case nodeID == "":
		return nil, errors.New("new cluster reporter: nodeID is empty")
	}
	return &ClusterReporter{client: client, nodeID: nodeID}, nil
}

// ReportTopicStatus sends the reports in requests of at most 1000, shortening error texts to the 2000
// characters the control plane keeps. It stops at the first failed request.
func (r *ClusterReporter) ReportTopicStatus(ctx context.Context, reports []*pdsv1.TopicStatusReport) error {
	for start := 0; start < len(reports); start += maxReportsPerRequest {
		chunk := reports[start:min(start+maxReportsPerRequest, len(reports))]
		topics := make([]*pdsv1.TopicStatusReport, len(chunk))
		for i, report := range chunk {
			topics[i] = report
			if msg := []rune(report.GetMessage()); len(msg) > maxReportMessageRunes {
				shortened := proto.CloneOf(report)
				shortened.Message = string(msg[:maxReportMessageRunes-1]) + "…"
				topics[i] = shortened
			}
		}
		_, err := r.client.ReportTopicStatus(ctx, connect.NewRequest(&pdsv1.ReportTopicStatusRequest{NodeId: r.nodeID, Topics: topics}))
		if err != nil {
			return fmt.Errorf("report status of %d topics as node %q: %w", len(topics), r.nodeID, err)
		}
	}
	return nil
}
