package cluster

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
)

// Limits of one ReportTopicStatus request. They match the topic_broker_status columns and the topic limits.
const (
	MaxReportedTopics        = 1000
	MaxTopicNameLength       = 200
	MaxTopicStatusMessageLen = 2000
	MaxPartitions            = 128
)

// ReportTopicStatus records what the reporting node's broker driver did with each topic: READY with the
// partitions the broker holds, FAILED with the error (the node keeps retrying), or PENDING. Reports for
// topics that were deleted or recreated since the node acted (topic_id no longer matches) are ignored, so
// a late report cannot describe a different topic of the same name. Any node may report; nothing here
// goes through raft, so every control-plane replica answers, not only the leader.
func (s *Service) ReportTopicStatus(ctx context.Context, req *connect.Request[pdsv1.ReportTopicStatusRequest]) (*connect.Response[pdsv1.ReportTopicStatusResponse], error) {
	id, reports := req.Msg.GetNodeId(), req.Msg.GetTopics()
	errs := validateNodeID(id)
	if len(reports) > MaxReportedTopics {
		errs = append(errs, apierr.Errorf("topics", "at most %d reports per request (got %d); send them in several requests",
			MaxReportedTopics, len(reports)))
	} else {
		for i, r := range reports {
			errs = append(errs, validateTopicReport(fmt.Sprintf("topics[%d]", i), r)...)
		}
	}
	if len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	stored, err := s.topicStatus.RecordTopicStatus(ctx, id, reports)
	if err != nil {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return nil, connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("report topic status: %w", context.DeadlineExceeded))
		case errors.Is(err, context.Canceled):
			return nil, connect.NewError(connect.CodeCanceled, fmt.Errorf("report topic status: %w", context.Canceled))
		}
		s.logger.Error("recording topic status failed", "node_id", id, "error", err)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("report topic status: could not store the reports; retry later"))
	}
	if ignored := len(reports) - stored; ignored > 0 {
		s.logger.Debug("ignored topic reports for deleted or recreated topics", "node_id", id, "ignored", ignored)
	}
	return connect.NewResponse(&pdsv1.ReportTopicStatusResponse{}), nil
}

func validateTopicReport(field string, r *pdsv1.TopicStatusReport) apierr.FieldErrors {
	var errs apierr.FieldErrors
	if _, err := uuid.Parse(r.GetTenantId()); err != nil {
		errs = append(errs, apierr.Errorf(field+".tenant_id", "must be a UUID (got %q)", r.GetTenantId()))
	}
	switch name := r.GetTopicName(); {
	case name == "":
		errs = append(errs, apierr.Errorf(field+".topic_name", "required"))
	case len(name) > MaxTopicNameLength:
		errs = append(errs, apierr.Errorf(field+".topic_name", "at most %d characters (got %d)", MaxTopicNameLength, len(name)))
	}
	if _, err := uuid.Parse(r.GetTopicId()); err != nil {
		errs = append(errs, apierr.Errorf(field+".topic_id", "must be the UUID of the topic the node acted on (got %q)", r.GetTopicId()))
	}
	switch r.GetState() {
	case pdsv1.BrokerState_BROKER_STATE_PENDING, pdsv1.BrokerState_BROKER_STATE_FAILED:
	case pdsv1.BrokerState_BROKER_STATE_READY:
		if r.GetPartitions() < 1 {
			errs = append(errs, apierr.Errorf(field+".partitions", "READY needs the partitions the broker holds, 1 to %d (got %d)",
				MaxPartitions, r.GetPartitions()))
		}
	default:
		errs = append(errs, apierr.Errorf(field+".state", "must be BROKER_STATE_PENDING, BROKER_STATE_READY or BROKER_STATE_FAILED (got %s)",
			r.GetState()))
	}
	if p := r.GetPartitions(); p < 0 || p > MaxPartitions {
		errs = append(errs, apierr.Errorf(field+".partitions", "must be from 0 to %d (got %d)", MaxPartitions, p))
	}
	if n := len([]rune(r.GetMessage())); n > MaxTopicStatusMessageLen {
		errs = append(errs, apierr.Errorf(field+".message", "at most %d characters (got %d); shorten the error text", MaxTopicStatusMessageLen, n))
	}
	return errs
}
