package apierr_test

import (
	"errors"
	"fmt"
	"testing"

	"connectrpc.com/connect"

	"github.com/pds-platform/pds/common/apierr"
)

func TestFieldErrorText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want string
	}{
		{name: "one field", err: &apierr.FieldError{Field: "events[2].routing.topic", Description: "at most 200 characters (got 245); shorten the topic name"},
			want: "events[2].routing.topic: at most 200 characters (got 245); shorten the topic name"},
		{name: "no field", err: &apierr.FieldError{Description: "is required"}, want: "is required"},
		{name: "several fields", err: apierr.FieldErrors{apierr.Errorf("a", "bad %d", 1), apierr.Errorf("b", "bad")},
			want: "a: bad 1; b: bad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestInvalidArgumentCarriesEveryViolation(t *testing.T) {
	t.Parallel()
	err := apierr.InvalidArgument(
		apierr.Errorf("events[0].event_id", "at most 100 characters (got 101)"),
		nil,
		apierr.Errorf("events[3].routing.priority", "must be from 0 to 9 (got 12)"),
	)
	if err.Code() != connect.CodeInvalidArgument {
		t.Fatalf("code = %v, want invalid_argument", err.Code())
	}
	wantMessage := "events[0].event_id: at most 100 characters (got 101); events[3].routing.priority: must be from 0 to 9 (got 12)"
	if err.Message() != wantMessage {
		t.Errorf("message = %q, want %q", err.Message(), wantMessage)
	}
	violations := apierr.Violations(err)
	if len(violations) != 2 || violations[0].GetField() != "events[0].event_id" || violations[1].GetField() != "events[3].routing.priority" ||
		violations[1].GetDescription() != "must be from 0 to 9 (got 12)" {
		t.Errorf("BadRequest violations = %v, want one per field error in order", violations)
	}
}

func TestFromError(t *testing.T) {
	t.Parallel()
	other := errors.New("database down")
	tests := []struct {
		name       string
		err        error
		wantFields []string // nil: the error must come back unchanged
	}{
		{name: "nil", err: nil},
		{name: "unrelated error", err: other},
		{name: "FieldErrors", err: apierr.FieldErrors{apierr.Errorf("a", "x"), apierr.Errorf("b", "y")}, wantFields: []string{"a", "b"}},
		{name: "wrapped FieldErrors", err: fmt.Errorf("create subscription: %w", apierr.FieldErrors{apierr.Errorf("filters.cel", "x")}),
			wantFields: []string{"filters.cel"}},
		{name: "single FieldError", err: apierr.Errorf("topic_name", "is required"), wantFields: []string{"topic_name"}},
		{name: "wrapped single FieldError", err: fmt.Errorf("op: %w", apierr.Errorf("topic_name", "is required")), wantFields: []string{"topic_name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := apierr.FromError(tt.err)
			if tt.wantFields == nil {
				if got != tt.err {
					t.Fatalf("FromError(%v) = %v, want the error unchanged", tt.err, got)
				}
				return
			}
			if connect.CodeOf(got) != connect.CodeInvalidArgument {
				t.Fatalf("FromError(%v) code = %v, want invalid_argument", tt.err, connect.CodeOf(got))
			}
			var fields []string
			for _, v := range apierr.Violations(got) {
				fields = append(fields, v.GetField())
			}
			if fmt.Sprint(fields) != fmt.Sprint(tt.wantFields) {
				t.Errorf("violations %v, want fields %v", fields, tt.wantFields)
			}
		})
	}
}

func TestFieldErrorsHelpers(t *testing.T) {
	t.Parallel()
	var empty apierr.FieldErrors
	if err := empty.Err(); err != nil {
		t.Errorf("empty FieldErrors.Err() = %v, want a nil error", err)
	}
	prefixed := apierr.FieldErrors{apierr.Errorf("cel", "x"), apierr.Errorf("[2]", "y"), apierr.Errorf("", "z")}.Prefixed("filters")
	var fields []string
	for _, e := range prefixed {
		fields = append(fields, e.Field)
	}
	if fmt.Sprint(fields) != "[filters.cel filters[2] filters]" {
		t.Errorf("Prefixed fields = %v, want [filters.cel filters[2] filters]", fields)
	}
}
