package api

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/common/fastproto"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// Publish validates and routes a batch, stores it durably at the broker, then updates the latest views.
// It answers OK only once the broker has stored every event of the batch.
func (s *Service) Publish(ctx context.Context, req *connect.Request[pdsv1.PublishRequest]) (*connect.Response[pdsv1.PublishResponse], error) {
	events := req.Msg.GetEvents()
	ctx, span := s.tracer.Start(ctx, "pds.v1.PortfolioStream/Publish")
	defer span.End()
	span.SetAttributes(attribute.Int("pds.publish.events", len(events)))
	start := time.Now()

	resp, err := s.publish(ctx, events)
	s.metrics.recordPublish(ctx, len(events), time.Since(start), err)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, connect.CodeOf(err).String())
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// topicBatch is the part of a Publish batch bound for one topic, in request order.
type topicBatch struct {
	topic   broker.TopicRef
	records []broker.Record
}

func (s *Service) publish(ctx context.Context, events []*pdsv1.PortfolioDistribution) (*pdsv1.PublishResponse, error) {
	if err := s.checkReady(); err != nil {
		return nil, err
	}
	if err := routing.CheckBatch(len(events)); err != nil {
		return nil, toConnectError("check publish batch", err, connect.CodeInvalidArgument)
	}
	cfg := s.config.Current()
	now := time.Now()

	var invalid apierr.FieldErrors
	var disabled []*errdetails.PreconditionFailure_Violation
	resp := &pdsv1.PublishResponse{Events: make([]*pdsv1.PublishedEvent, len(events))}
	// One allocation for the response's events, and one growing buffer for the records' encodings, instead
	// of one of each per event. The records alias the buffer's earlier arrays when it grows; nothing
	// writes to them after encoding.
	published := make([]pdsv1.PublishedEvent, len(events))
	var encoded []byte
	var stored [][]byte // stored[i]: events[i]'s encoding in encoded, for the latest views
	batches := map[string]*topicBatch{}
	var batchOrder []*topicBatch
	var trace map[string]string // the call's trace properties, taken at the first event that needs them
	for i, ev := range events {
		// Field paths are built only for errors: this loop runs for every published event.
		field := func() string { return "events[" + strconv.Itoa(i) + "]" }
		if err := routing.Normalize(ev, "", now); err != nil {
			var fieldErrs apierr.FieldErrors
			var fieldErr *apierr.FieldError
			switch {
			case errors.As(err, &fieldErrs):
				invalid = append(invalid, fieldErrs.Prefixed(field())...)
			case errors.As(err, &fieldErr):
				invalid = append(invalid, apierr.FieldErrors{fieldErr}.Prefixed(field())...)
			default:
				return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("normalize %s: %w", field(), err))
			}
			continue
		}
		topicName := ev.GetRouting().GetTopic()
		topic, ok := cfg.Topic(s.tenantID, topicName)
		if !ok {
			invalid = append(invalid, &apierr.FieldError{
				Field:       field() + ".routing.topic",
				Description: fmt.Sprintf("topic %q does not exist; create it first (TopicService.CreateTopic) or leave routing.topic empty to use the data type's default topic", topicName),
			})
			continue
		}
		if want := topic.GetDataType(); want != pdsv1.PortfolioDataType_PORTFOLIO_DATA_TYPE_UNSPECIFIED && want != ev.GetDataType() {
			invalid = append(invalid, &apierr.FieldError{
				Field:       field() + ".data_type",
				Description: fmt.Sprintf("topic %q carries %s events, got %s; publish to a topic of this data type", topicName, want, ev.GetDataType()),
			})
			continue
		}
		if !topic.GetEnabled() {
			disabled = append(disabled, &errdetails.PreconditionFailure_Violation{
				Type:        "TOPIC_DISABLED",
				Subject:     field() + ".routing.topic",
				Description: fmt.Sprintf("topic %q is disabled; enable it (TopicService.SetTopicEnabled) before publishing", topicName),
			})
			continue
		}
		if len(invalid) > 0 || len(disabled) > 0 {
			// The batch fails anyway; keep collecting errors but skip the encoding work.
			continue
		}

		partitions := max(int(topic.GetPartitions()), 1)
		key := ev.GetRouting().GetRoutingKey()
		partition := routing.Partition(key, partitions)
		if encoded == nil {
			encoded = make([]byte, 0, (len(events)-i)*ev.SizeVT()*5/4)
		}
		start := len(encoded)
		var err error
		if encoded, err = fastproto.Append(encoded, ev); err != nil {
			return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("encode %s: %w", field(), err))
		}
		value := encoded[start:len(encoded):len(encoded)]
		batch, ok := batches[topic.GetId()]
		if !ok {
			batch = &topicBatch{topic: broker.TopicRef{
				TenantID:   s.tenantID,
				ID:         topic.GetId(),
				Name:       topicName,
				Partitions: partitions,
			}}
			batch.records = make([]broker.Record, 0, len(events)-i)
			batches[topic.GetId()] = batch
			batchOrder = append(batchOrder, batch)
		}
		if stored == nil {
			stored = make([][]byte, len(events))
		}
		stored[i] = value
		record := broker.Record{Partition: partition, Key: key, EventID: ev.GetEventId(), Value: value,
			TargetWorkflows: ev.GetRouting().GetTargetWorkflows()}
		if s.keepsProperties {
			if trace == nil {
				trace = traceProperties(ctx)
			}
			record.Properties = recordProperties(trace, ev)
		}
		batch.records = append(batch.records, record)
		out := &published[i]
		out.EventId, out.Topic, out.RoutingKey, out.Partition = ev.GetEventId(), topicName, key, int32(partition)
		resp.Events[i] = out
	}
	if len(invalid) > 0 {
		return nil, apierr.InvalidArgument(invalid...)
	}
	if len(disabled) > 0 {
		subjects := make([]string, len(disabled))
		for i, v := range disabled {
			subjects[i] = v.GetDescription()
		}
		return nil, failedPrecondition("nothing was published: "+strings.Join(subjects, "; "), disabled...)
	}

	if err := s.store(ctx, batchOrder); err != nil {
		return nil, err
	}
	// The events are durable now. A failed view update must not fail the Publish: the producer's retry
	// would deliver every event again to every subscriber. The view is rewritten by the next event of
	// that portfolio.
	if err := s.latest.Record(s.tenantID, events, stored); err != nil {
		s.metrics.latestFailures.Add(ctx, 1)
		s.logger.ErrorContext(ctx, "latest view update failed after publish", "error", err)
	}
	return resp, nil
}

// ensuredTopic is the key of Service.ensuredTopics.
type ensuredTopic struct {
	tenantID, id string
	partitions   int
}

// store publishes each topic's records, topics concurrently, and returns once all are stored.
func (s *Service) store(ctx context.Context, batches []*topicBatch) error {
	if len(batches) == 1 {
		return s.storeTopic(ctx, batches[0])
	}
	errs := make([]error, len(batches))
	var wg sync.WaitGroup
	for i, batch := range batches {
		wg.Go(func() { errs[i] = s.storeTopic(ctx, batch) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) storeTopic(ctx context.Context, batch *topicBatch) error {
	key := ensuredTopic{batch.topic.TenantID, batch.topic.ID, batch.topic.Partitions}
	if _, ok := s.ensuredTopics.Load(key); !ok {
		if err := s.broker.EnsureTopic(ctx, batch.topic); err != nil {
			return toConnectError(fmt.Sprintf("prepare topic %q at the broker", batch.topic.Name), err, connect.CodeUnavailable)
		}
		s.ensuredTopics.Store(key, struct{}{})
	}
	if err := s.broker.Publish(ctx, batch.topic, batch.records); err != nil {
		return toConnectError(fmt.Sprintf("store %d events in topic %q (none is confirmed; retrying is safe, duplicates keep their event_id)",
			len(batch.records), batch.topic.Name), err, connect.CodeUnavailable)
	}
	return nil
}
