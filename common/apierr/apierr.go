// Package apierr turns validation failures into Connect errors a client can act on: code InvalidArgument,
// a message naming every offending field with its limit, and google.rpc.BadRequest details carrying one
// field violation per problem.
package apierr

import (
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// FieldError is one problem with one input field.
type FieldError struct {
	// Field is the path of the field in the request, e.g. "events[2].routing.topic" or "filters.cel".
	Field string
	// Description says what is wrong, the limit, and what to do, e.g.
	// "at most 200 characters (got 245); shorten the topic name".
	Description string
}

// Error returns "<field>: <description>".
func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Description
	}
	return e.Field + ": " + e.Description
}

// Errorf builds a FieldError with a formatted description.
func Errorf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Description: fmt.Sprintf(format, args...)}
}

// FieldErrors collects every problem found in one input, so a client can fix them all in one round trip.
// A nil or empty FieldErrors is not an error: use Err to return it.
type FieldErrors []*FieldError

// Error joins the field errors with "; ".
func (errs FieldErrors) Error() string {
	parts := make([]string, 0, len(errs))
	for _, e := range errs {
		parts = append(parts, e.Error())
	}
	return strings.Join(parts, "; ")
}

// Err returns errs as an error, or nil when it is empty, avoiding the typed-nil-interface trap.
func (errs FieldErrors) Err() error {
	if len(errs) == 0 {
		return nil
	}
	return errs
}

// Prefixed returns copies of errs with prefix and a dot prepended to each field path ("filters" +
// "cel" -> "filters.cel"); a field starting with "[" is joined without the dot.
func (errs FieldErrors) Prefixed(prefix string) FieldErrors {
	out := make(FieldErrors, len(errs))
	for i, e := range errs {
		out[i] = &FieldError{Field: JoinField(prefix, e.Field), Description: e.Description}
	}
	return out
}

// JoinField joins two field path parts: ("events[1]", "routing.topic") -> "events[1].routing.topic",
// ("events", "[1]") -> "events[1]". Either part may be empty.
func JoinField(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	case strings.HasPrefix(field, "["):
		return prefix + field
	default:
		return prefix + "." + field
	}
}

// InvalidArgument returns a Connect InvalidArgument error whose message names each field and its problem
// and whose details hold a google.rpc.BadRequest with one field violation per error. Nil entries are skipped.
func InvalidArgument(errs ...*FieldError) *connect.Error {
	violations := make([]*errdetails.BadRequest_FieldViolation, 0, len(errs))
	messages := make([]string, 0, len(errs))
	for _, e := range errs {
		if e == nil {
			continue
		}
		violations = append(violations, &errdetails.BadRequest_FieldViolation{
			Field:       e.Field,
			Description: e.Description,
		})
		messages = append(messages, e.Error())
	}
	message := "invalid argument"
	if len(messages) > 0 {
		message = strings.Join(messages, "; ")
	}
	cerr := connect.NewError(connect.CodeInvalidArgument, errors.New(message))
	if len(violations) > 0 {
		// NewErrorDetail only fails when the message cannot be marshalled, which a BadRequest always can.
		if detail, err := connect.NewErrorDetail(&errdetails.BadRequest{FieldViolations: violations}); err == nil {
			cerr.AddDetail(detail)
		}
	}
	return cerr
}

// FromError turns an error holding field errors (a FieldErrors or a *FieldError anywhere in its chain)
// into the InvalidArgument Connect error for them. Any other error, including nil, is returned unchanged.
func FromError(err error) error {
	if err == nil {
		return nil
	}
	var many FieldErrors
	if errors.As(err, &many) && len(many) > 0 {
		return InvalidArgument(many...)
	}
	var one *FieldError
	if errors.As(err, &one) {
		return InvalidArgument(one)
	}
	return err
}

// Violations returns the google.rpc.BadRequest field violations carried by a Connect error, or nil. Clients
// and tests use it to read which fields a request got wrong.
func Violations(err error) []*errdetails.BadRequest_FieldViolation {
	var cerr *connect.Error
	if !errors.As(err, &cerr) {
		return nil
	}
	var out []*errdetails.BadRequest_FieldViolation
	for _, d := range cerr.Details() {
		msg, derr := d.Value()
		if derr != nil {
			continue
		}
		if br, ok := msg.(*errdetails.BadRequest); ok {
			out = append(out, br.GetFieldViolations()...)
		}
	}
	return out
}
