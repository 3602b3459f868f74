package health_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/pds-platform/pds/common/health"
)

func TestEndpoints(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		path       string
		ready      bool
		reason     string
		wantStatus int
		wantBody   map[string]any
	}{
		{"healthz answers while serving", "/healthz", false, "", http.StatusOK, map[string]any{"status": "ok"}},
		{"ready", "/readyz", true, "", http.StatusOK, map[string]any{"ready": true, "config_version": float64(42)}},
		{"not ready gives the reason", "/readyz", false, "no raft leader", http.StatusServiceUnavailable,
			map[string]any{"ready": false, "config_version": float64(42), "reason": "no raft leader"}},
		{"not ready without a reason still explains", "/readyz", false, "", http.StatusServiceUnavailable,
			map[string]any{"ready": false, "config_version": float64(42), "reason": "not ready"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			mux := http.NewServeMux()
			health.Register(mux, func() (bool, uint64, string) { return tc.ready, 42, tc.reason })
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
			if rec.Code != tc.wantStatus {
				t.Fatalf("GET %s: status %d, want %d", tc.path, rec.Code, tc.wantStatus)
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("GET %s: body %q is not JSON: %v", tc.path, rec.Body, err)
			}
			if len(body) != len(tc.wantBody) {
				t.Fatalf("GET %s: body %v, want %v", tc.path, body, tc.wantBody)
			}
			for k, v := range tc.wantBody {
				if body[k] != v {
					t.Fatalf("GET %s: body %v, want %v", tc.path, body, tc.wantBody)
				}
			}
		})
	}
}
