package store

import (
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"google.golang.org/protobuf/encoding/protojson"

	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/db/sqlcdb"
)

// createdAtLayout is RFC 3339 in UTC with milliseconds, e.g. 2026-11-28T15:04:05.123Z.
const createdAtLayout = "2006-01-02T15:04:05.000Z07:00"

var (
	// Filters are stored with the specification's snake_case names so the column reads like the API.
	filtersMarshal = protojson.MarshalOptions{UseProtoNames: true}
	// A newer control plane may have stored fields this one does not know; reading must not fail on them.
	filtersUnmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}
)

func formatUUID(id pgtype.UUID) string {
	if !id.Valid {
		return ""
	}
	return uuid.UUID(id.Bytes).String()
}

// uuidOf parses an id this store produced; an invalid one yields the NULL UUID, which matches no row.
func uuidOf(id string) pgtype.UUID {
	var u pgtype.UUID
	_ = u.Scan(id)
	return u
}

func formatCreatedAt(ts pgtype.Timestamptz) string {
	if !ts.Valid {
		return ""
	}
	return ts.Time.UTC().Format(createdAtLayout)
}

func dataTypeName(t pdsv1.PortfolioDataType) string { return t.String() }

func parseDataType(name string) (pdsv1.PortfolioDataType, error) {
	v, ok := pdsv1.PortfolioDataType_value[name]
	if !ok {
		return 0, fmt.Errorf("unknown data_type %q in database", name)
	}
	return pdsv1.PortfolioDataType(v), nil
}

func topicFromRow(row sqlcdb.PortfolioTopic) (*pdsv1.Topic, error) {
	dataType, err := parseDataType(row.DataType)
	if err != nil {
		return nil, fmt.Errorf("topic %q: %w", row.TopicName, err)
	}
	return &pdsv1.Topic{
		Id:         formatUUID(row.ID),
		TenantId:   formatUUID(row.TenantID),
		TopicName:  row.TopicName,
		DataType:   dataType,
		Partitions: row.Partitions,
		Enabled:    row.Enabled,
		CreatedAt:  formatCreatedAt(row.CreatedAt),
	}, nil
}

func subscriptionFromRow(row sqlcdb.PortfolioSubscription) (*pdsv1.Subscription, error) {
	filters, err := decodeFilters(row.Filters)
	if err != nil {
		return nil, fmt.Errorf("subscription %q: %w", row.SubscriptionID, err)
	}
	return &pdsv1.Subscription{
		Id:                 formatUUID(row.ID),
		TenantId:           formatUUID(row.TenantID),
		SubscriptionId:     row.SubscriptionID,
		TopicName:          row.TopicName,
		SubscriberWorkflow: row.SubscriberWorkflow,
		Filters:            filters,
		Status:             row.Status,
		CreatedAt:          formatCreatedAt(row.CreatedAt),
	}, nil
}

// encodeFilters returns the JSONB value for filters; nil filters are stored as SQL NULL.
func encodeFilters(filters *pdsv1.SubscriptionFilters) ([]byte, error) {
	if filters == nil {
		return nil, nil
	}
	b, err := filtersMarshal.Marshal(filters)
	if err != nil {
		return nil, fmt.Errorf("encode filters: %w", err)
	}
	return b, nil
}

func decodeFilters(raw []byte) (*pdsv1.SubscriptionFilters, error) {
	if raw == nil {
		return nil, nil
	}
	var filters pdsv1.SubscriptionFilters
	if err := filtersUnmarshal.Unmarshal(raw, &filters); err != nil {
		return nil, fmt.Errorf("decode filters: %w", err)
	}
	return &filters, nil
}
