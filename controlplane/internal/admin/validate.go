package admin

import (
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/common/filter"
	pdsv1 "github.com/pds-platform/pds/common/gen/pds/v1"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/controlplane/internal/store"
)

// Limits of the admin API, from the specification's columns.
const (
	// MaxPartitions is the most partitions a topic may have; 0 on create means 1.
	MaxPartitions = 128
	// MaxSubscriptionIDLength is the longest subscription_id, in characters.
	MaxSubscriptionIDLength = 100
	// MaxWorkflowLength is the longest subscriber_workflow, in characters.
	MaxWorkflowLength = routing.MaxWorkflowLength
)

func checkTopicName(errs apierr.FieldErrors, field, name string) apierr.FieldErrors {
	if e := routing.CheckTopicName(field, name); e != nil {
		errs = append(errs, e)
	}
	return errs
}

func checkDataType(errs apierr.FieldErrors, field string, t pdsv1.PortfolioDataType) apierr.FieldErrors {
	if _, known := pdsv1.PortfolioDataType_name[int32(t)]; known && t != pdsv1.PortfolioDataType_PORTFOLIO_DATA_TYPE_UNSPECIFIED {
		return errs
	}
	return append(errs, apierr.Errorf(field,
		"is required: one of PORTFOLIO_STATE, PERFORMANCE_ATTRIBUTION, REBALANCING, RISK_BUDGET, CASH_MANAGEMENT (got %s)", t))
}

// checkPartitions accepts 0 (create: 1; update: keep the current count) and 1..MaxPartitions.
func checkPartitions(errs apierr.FieldErrors, field string, n int32) apierr.FieldErrors {
	if n >= 0 && n <= MaxPartitions {
		return errs
	}
	return append(errs, apierr.Errorf(field, "must be from 1 to %d (got %d); 0 means 1 on create", MaxPartitions, n))
}

func checkSubscriptionID(errs apierr.FieldErrors, field, id string) apierr.FieldErrors {
	if id == "" {
		return append(errs, apierr.Errorf(field, "is required: 1 to %d characters from letters, digits, '.', '_' and '-'", MaxSubscriptionIDLength))
	}
	if n := utf8.RuneCountInString(id); n > MaxSubscriptionIDLength {
		return append(errs, apierr.Errorf(field, "at most %d characters (got %d); shorten the subscription id", MaxSubscriptionIDLength, n))
	}
	for i, r := range id {
		if !isSubscriptionIDChar(r) {
			return append(errs, apierr.Errorf(field, "may contain only letters, digits, '.', '_' and '-' (got %q at byte %d)", r, i))
		}
	}
	return errs
}

func isSubscriptionIDChar(r rune) bool {
	return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') || r == '.' || r == '_' || r == '-'
}

func checkWorkflow(errs apierr.FieldErrors, field, workflow string) apierr.FieldErrors {
	switch n := utf8.RuneCountInString(workflow); {
	case workflow == "":
		return append(errs, apierr.Errorf(field, "is required, at most %d characters: the workflow name events' target_workflows refer to", MaxWorkflowLength))
	case !utf8.ValidString(workflow):
		return append(errs, apierr.Errorf(field, "must be valid UTF-8"))
	case n > MaxWorkflowLength:
		return append(errs, apierr.Errorf(field, "at most %d characters (got %d); shorten the workflow name", MaxWorkflowLength, n))
	}
	for _, r := range workflow {
		if unicode.IsControl(r) {
			return append(errs, apierr.Errorf(field, "must not contain control characters"))
		}
	}
	return errs
}

// normalizeStatus checks a status and returns it with the default applied.
func normalizeStatus(errs apierr.FieldErrors, field, status string) (string, apierr.FieldErrors) {
	switch status {
	case "":
		return store.StatusActive, errs
	case store.StatusActive, store.StatusPaused:
		return status, errs
	}
	return status, append(errs, apierr.Errorf(field, "must be %q or %q (got %q); empty means %q",
		store.StatusActive, store.StatusPaused, truncate(status), store.StatusActive))
}

// checkFilters compiles filters the way every data-plane node will, so a subscription that is accepted
// always compiles there.
func checkFilters(errs apierr.FieldErrors, prefix string, filters *pdsv1.SubscriptionFilters) apierr.FieldErrors {
	_, err := filter.Compile(filters)
	if err == nil {
		return errs
	}
	var fieldErrs apierr.FieldErrors
	if errors.As(err, &fieldErrs) {
		return append(errs, fieldErrs.Prefixed(prefix)...)
	}
	return append(errs, apierr.Errorf(prefix+".filters", "%s", err.Error()))
}

// truncate keeps echoed input short so an error message cannot grow with the input.
func truncate(s string) string {
	const limit = 40
	if utf8.RuneCountInString(s) <= limit {
		return s
	}
	return fmt.Sprintf("%s…", string([]rune(s)[:limit]))
}
