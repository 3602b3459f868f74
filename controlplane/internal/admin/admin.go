// Package admin serves the control plane's Connect admin API for topics and subscriptions: it validates
// requests, writes through the store (row and replicated-config command in one transaction) and answers a
// write once the replicated configuration holds it, with that configuration version.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/pds-platform/pds/common/tenancy"
	"github.com/pds-platform/pds/controlplane/internal/store"
)

// ConfigWaiter waits for a committed outbox row to reach the replicated configuration.
type ConfigWaiter interface {
	// WaitApplied blocks until the raft leader has applied the outbox row outboxID to the replicated
	// configuration and returns the configuration version (raft index) that holds it. It returns an error
	// when ctx ends first or when this node cannot tell (e.g. it lost leadership); the row stays committed
	// and is applied later either way. Safe for concurrent use.
	WaitApplied(ctx context.Context, outboxID uint64) (configVersion uint64, err error)
}

// Deps are the collaborators of the admin services; every field is required.
type Deps struct {
	Store  *store.Store
	Waiter ConfigWaiter
	Logger *slog.Logger
}

func (d Deps) check() {
	switch {
	case d.Store == nil:
		panic("admin: Deps.Store is nil")
	case d.Waiter == nil:
		panic("admin: Deps.Waiter is nil")
	case d.Logger == nil:
		panic("admin: Deps.Logger is nil")
	}
}

// tenantOf is the tenant a request acts for. Every request belongs to the default tenant until requests
// carry authenticated tenants.
func tenantOf(context.Context) string { return tenancy.DefaultTenantID }

// waitApplied turns a committed write into the configuration version that holds it.
func (d Deps) waitApplied(ctx context.Context, op string, outboxID uint64) (uint64, error) {
	version, err := d.Waiter.WaitApplied(ctx, outboxID)
	if err == nil {
		return version, nil
	}
	d.Logger.WarnContext(ctx, "admin write saved but not yet applied", "op", op, "outbox_id", outboxID, "error", err)
	msg := fmt.Errorf("%s: the change is saved (outbox id %d) but not yet applied to the replicated configuration; "+
		"it will be applied without retrying: %w", op, outboxID, err)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return 0, connect.NewError(connect.CodeDeadlineExceeded, msg)
	case errors.Is(err, context.Canceled):
		return 0, connect.NewError(connect.CodeCanceled, msg)
	default:
		return 0, connect.NewError(connect.CodeUnavailable, msg)
	}
}

// internal logs an unexpected failure and answers without leaking internals; the caller's context errors
// keep their own codes.
func (d Deps) internal(ctx context.Context, op string, err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("%s: %w", op, context.DeadlineExceeded))
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, fmt.Errorf("%s: %w", op, context.Canceled))
	}
	d.Logger.ErrorContext(ctx, "admin request failed", "op", op, "error", err)
	return connect.NewError(connect.CodeInternal, fmt.Errorf("%s failed; see the control plane log", op))
}
