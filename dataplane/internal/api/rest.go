package api

import (
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
	"github.com/pds-platform/pds/common/apierr"
	"github.com/pds-platform/pds/common/jsoncodec"
	"github.com/pds-platform/pds/common/routing"
	"github.com/pds-platform/pds/dataplane/internal/latest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// serveLatest answers GET /api/v1/portfolio/{portfolio_id}/<view> with the newest event of that view as
// the portfolio_distributed JSON.
func (s *Service) serveLatest(view latest.View) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		status := s.writeLatest(w, r, view)
		s.metrics.restRequests.Add(r.Context(), 1, metric.WithAttributes(
			attribute.String("view", string(view)), attribute.Int("status", status)))
	}
}

func (s *Service) writeLatest(w http.ResponseWriter, r *http.Request, view latest.View) int {
	fail := func(err error) int {
		writeJSONError(w, err)
		return httpStatus(connect.CodeOf(err))
	}
	portfolioID := r.PathValue("portfolio_id")
	if err := routing.CheckPortfolioID("portfolio_id", portfolioID); err != nil {
		return fail(apierr.InvalidArgument(err))
	}
	ev, ok, err := s.latest.Get(r.Context(), s.tenantID, view, portfolioID)
	switch {
	case errors.Is(err, latest.ErrUnsupported):
		return fail(connect.NewError(connect.CodeUnimplemented, fmt.Errorf("the %s view is not kept by this data plane's broker", view)))
	case err != nil:
		s.logger.ErrorContext(r.Context(), "read latest view", "view", view, "portfolio_id", portfolioID, "error", err)
		return fail(connect.NewError(connect.CodeUnavailable, fmt.Errorf("read the %s of portfolio %q: %w", view, portfolioID, err)))
	case !ok:
		return fail(connect.NewError(connect.CodeNotFound, fmt.Errorf("no %s for portfolio %q yet", view, portfolioID)))
	}
	body, err := jsoncodec.Marshal(ev)
	if err != nil {
		return fail(connect.NewError(connect.CodeInternal, fmt.Errorf("encode the %s of portfolio %q: %w", view, portfolioID, err)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return http.StatusOK
}
