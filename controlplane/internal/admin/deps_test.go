package admin_test

import (
	"io"
	"log/slog"
	"testing"

	"github.com/pds-platform/pds/controlplane/internal/admin"
	"github.com/pds-platform/pds/controlplane/internal/store"
)

func TestConstructorsRefuseMissingDependencies(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	waiter := &outboxApplier{}
	tests := []struct {
		name string
		deps admin.Deps
	}{
		{"no store", admin.Deps{Waiter: waiter, Logger: logger}},
		{"no waiter", admin.Deps{Store: &store.Store{}, Logger: logger}},
		{"no logger", admin.Deps{Store: &store.Store{}, Waiter: waiter}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for service, build := range map[string]func(admin.Deps){
				"topics":        func(d admin.Deps) { admin.NewTopicService(d) },
				"subscriptions": func(d admin.Deps) { admin.NewSubscriptionService(d) },
			} {
				func() {
					defer func() {
						if recover() == nil {
							t.Errorf("%s service built with %s, want a panic", service, tt.name)
						}
					}()
					build(tt.deps)
				}()
			}
		})
	}
}
