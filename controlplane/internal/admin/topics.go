package admin

import (
	"context"
	"errors"
	"fmt"

	"connectrpc.com/connect"

	"github.com/pds-platform/pds/common/apierr"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/gen/pds/v1/pdsv1connect"
	"github.com/pds-platform/pds/controlplane/internal/store"
)

// TopicService implements pds.v1.TopicService.
type TopicService struct {
	deps Deps
}

var _ pdsv1connect.TopicServiceHandler = (*TopicService)(nil)

// NewTopicService returns the topic admin service. It panics when a dependency is missing.
func NewTopicService(deps Deps) *TopicService {
	deps.check()
	return &TopicService{deps: deps}
}

// CreateTopic creates a topic. Topics are always created enabled: proto3 cannot tell an unset enabled
// from false, and the specification's default is true; use SetTopicEnabled to disable one.
func (s *TopicService) CreateTopic(ctx context.Context, req *connect.Request[pdsv1.CreateTopicRequest]) (*connect.Response[pdsv1.CreateTopicResponse], error) {
	in := req.Msg.GetTopic()
	var errs apierr.FieldErrors
	errs = checkTopicName(errs, "topic.topic_name", in.GetTopicName())
	errs = checkDataType(errs, "topic.data_type", in.GetDataType())
	errs = checkPartitions(errs, "topic.partitions", in.GetPartitions())
	if len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	partitions := in.GetPartitions()
	if partitions == 0 {
		partitions = 1
	}
	topic, outboxID, err := s.deps.Store.CreateTopic(ctx, tenantOf(ctx), &pdsv1.Topic{
		TopicName:  in.GetTopicName(),
		DataType:   in.GetDataType(),
		Partitions: partitions,
		Enabled:    true,
	})
	if err != nil {
		return nil, s.topicError(ctx, "create topic", in.GetTopicName(), err)
	}
	version, err := s.deps.waitApplied(ctx, "create topic", outboxID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pdsv1.CreateTopicResponse{Topic: topic, ConfigVersion: version}), nil
}

// GetTopic returns one topic.
func (s *TopicService) GetTopic(ctx context.Context, req *connect.Request[pdsv1.GetTopicRequest]) (*connect.Response[pdsv1.GetTopicResponse], error) {
	name := req.Msg.GetTopicName()
	if errs := checkTopicName(nil, "topic_name", name); len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	topic, err := s.deps.Store.GetTopic(ctx, tenantOf(ctx), name)
	if err != nil {
		return nil, s.topicError(ctx, "get topic", name, err)
	}
	return connect.NewResponse(&pdsv1.GetTopicResponse{Topic: topic}), nil
}

// ListTopics returns the tenant's topics ordered by name.
func (s *TopicService) ListTopics(ctx context.Context, _ *connect.Request[pdsv1.ListTopicsRequest]) (*connect.Response[pdsv1.ListTopicsResponse], error) {
	topics, err := s.deps.Store.ListTopics(ctx, tenantOf(ctx))
	if err != nil {
		return nil, s.deps.internal(ctx, "list topics", err)
	}
	return connect.NewResponse(&pdsv1.ListTopicsResponse{Topics: topics}), nil
}

// UpdateTopic changes data_type and partitions (0 keeps the current count; fewer than now is refused).
func (s *TopicService) UpdateTopic(ctx context.Context, req *connect.Request[pdsv1.UpdateTopicRequest]) (*connect.Response[pdsv1.UpdateTopicResponse], error) {
	in := req.Msg.GetTopic()
	var errs apierr.FieldErrors
	errs = checkTopicName(errs, "topic.topic_name", in.GetTopicName())
	errs = checkDataType(errs, "topic.data_type", in.GetDataType())
	errs = checkPartitions(errs, "topic.partitions", in.GetPartitions())
	if len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	topic, outboxID, err := s.deps.Store.UpdateTopic(ctx, tenantOf(ctx), &pdsv1.Topic{
		TopicName:  in.GetTopicName(),
		DataType:   in.GetDataType(),
		Partitions: in.GetPartitions(),
	})
	if err != nil {
		return nil, s.topicError(ctx, "update topic", in.GetTopicName(), err)
	}
	version, err := s.deps.waitApplied(ctx, "update topic", outboxID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pdsv1.UpdateTopicResponse{Topic: topic, ConfigVersion: version}), nil
}

// SetTopicEnabled switches a topic on or off.
func (s *TopicService) SetTopicEnabled(ctx context.Context, req *connect.Request[pdsv1.SetTopicEnabledRequest]) (*connect.Response[pdsv1.SetTopicEnabledResponse], error) {
	name := req.Msg.GetTopicName()
	if errs := checkTopicName(nil, "topic_name", name); len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	topic, outboxID, err := s.deps.Store.SetTopicEnabled(ctx, tenantOf(ctx), name, req.Msg.GetEnabled())
	if err != nil {
		return nil, s.topicError(ctx, "set topic enabled", name, err)
	}
	version, err := s.deps.waitApplied(ctx, "set topic enabled", outboxID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pdsv1.SetTopicEnabledResponse{Topic: topic, ConfigVersion: version}), nil
}

// DeleteTopic deletes a topic that no subscription reads.
func (s *TopicService) DeleteTopic(ctx context.Context, req *connect.Request[pdsv1.DeleteTopicRequest]) (*connect.Response[pdsv1.DeleteTopicResponse], error) {
	name := req.Msg.GetTopicName()
	if errs := checkTopicName(nil, "topic_name", name); len(errs) > 0 {
		return nil, apierr.InvalidArgument(errs...)
	}
	outboxID, err := s.deps.Store.DeleteTopic(ctx, tenantOf(ctx), name)
	if err != nil {
		return nil, s.topicError(ctx, "delete topic", name, err)
	}
	version, err := s.deps.waitApplied(ctx, "delete topic", outboxID)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&pdsv1.DeleteTopicResponse{ConfigVersion: version}), nil
}

func (s *TopicService) topicError(ctx context.Context, op, name string, err error) error {
	var shrink *store.PartitionsShrinkError
	switch {
	case errors.Is(err, store.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("topic %q not found", name))
	case errors.Is(err, store.ErrAlreadyExists):
		return connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("topic %q already exists", name))
	case errors.Is(err, store.ErrTopicInUse):
		return connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("topic %q still has subscriptions; delete them first (ListSubscriptions with topic_name %q)", name, name))
	case errors.As(err, &shrink):
		return apierr.InvalidArgument(apierr.Errorf("topic.partitions",
			"can only grow: at least %d, the current count, and at most %d (got %d)", shrink.Current, MaxPartitions, shrink.Requested))
	}
	return s.deps.internal(ctx, op, err)
}
