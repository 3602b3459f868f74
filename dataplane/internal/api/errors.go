package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/dataplane/internal/broker"
	"github.com/pds-platform/pds/dataplane/internal/delivery"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// toConnectError turns an error from a collaborator into a Connect error a client can act on: field
// errors become InvalidArgument with details, delivery's sentinel errors their codes, and anything else
// fallback with the operation named.
func toConnectError(op string, err error, fallback connect.Code) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	if converted := apierr.FromError(err); converted != err {
		return converted
	}
	code := fallback
	switch {
	case errors.Is(err, delivery.ErrSubscriptionNotFound):
		code = connect.CodeNotFound
	case errors.Is(err, delivery.ErrSubscriptionPaused), errors.Is(err, delivery.ErrTopicNotFound),
		errors.Is(err, delivery.ErrTopicChanged), errors.Is(err, delivery.ErrWorkflowChanged):
		code = connect.CodeFailedPrecondition
	case errors.Is(err, delivery.ErrServiceClosed), errors.Is(err, delivery.ErrSessionClosed):
		code = connect.CodeUnavailable
	case errors.Is(err, context.Canceled):
		code = connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		code = connect.CodeDeadlineExceeded
	case errors.Is(err, broker.ErrClosed):
		code = connect.CodeUnavailable
	}
	return connect.NewError(code, fmt.Errorf("%s: %w", op, err))
}

// failedPrecondition is a FailedPrecondition error whose details name each violation.
func failedPrecondition(message string, violations ...*errdetails.PreconditionFailure_Violation) *connect.Error {
	ce := connect.NewError(connect.CodeFailedPrecondition, errors.New(message))
	if detail, err := connect.NewErrorDetail(&errdetails.PreconditionFailure{Violations: violations}); err == nil {
		ce.AddDetail(detail)
	}
	return ce
}

// jsonError is the error body of the REST and WebSocket surfaces:
// {"error":{"code":"not_found","message":"…","field_violations":[{"field":"…","description":"…"}]}}.
type jsonError struct {
	Error jsonErrorBody `json:"error"`
}

type jsonErrorBody struct {
	// Code is the Connect code name, e.g. "invalid_argument", "not_found".
	Code            string               `json:"code"`
	Message         string               `json:"message"`
	FieldViolations []jsonFieldViolation `json:"field_violations,omitempty"`
}

type jsonFieldViolation struct {
	Field       string `json:"field"`
	Description string `json:"description"`
}

// newJSONError describes err (a Connect error or anything else) in the REST/WebSocket error shape.
func newJSONError(err error) jsonError {
	var ce *connect.Error
	if !errors.As(err, &ce) {
		ce = connect.NewError(connect.CodeInternal, err)
	}
	body := jsonErrorBody{Code: ce.Code().String(), Message: ce.Message()}
	for _, d := range ce.Details() {
		value, derr := d.Value()
		if derr != nil {
			continue
		}
		if br, ok := value.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				body.FieldViolations = append(body.FieldViolations, jsonFieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		}
	}
	return jsonError{Error: body}
}

// httpStatus maps a Connect code to the HTTP status of the REST surface.
func httpStatus(code connect.Code) int {
	switch code {
	case connect.CodeInvalidArgument, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeFailedPrecondition:
		return http.StatusConflict
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeCanceled:
		return 499
	default:
		return http.StatusInternalServerError
	}
}

// writeJSONError answers an HTTP request with err in the REST error shape.
func writeJSONError(w http.ResponseWriter, err error) {
	writeJSON(w, httpStatus(connect.CodeOf(err)), newJSONError(err))
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	data, err := json.Marshal(body)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"encode response"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}
