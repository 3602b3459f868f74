// Package health serves the liveness and readiness endpoints every PDS process exposes.
package health

import (
	"encoding/json"
	"net/http"
)

// ReadyFunc reports whether the process should receive traffic, the replicated config version it has
// applied, and, when not ready, a short human-readable reason. It is called on every /readyz request and
// must be cheap and safe for concurrent use.
type ReadyFunc func() (ready bool, configVersion uint64, reason string)

type readiness struct {
	Ready         bool   `json:"ready"`
	ConfigVersion uint64 `json:"config_version"`
	Reason        string `json:"reason,omitempty"`
}

// Register adds GET /healthz (200 {"status":"ok"} while the process serves HTTP) and GET /readyz
// (200 {"ready":true,"config_version":N} or 503 {"ready":false,"config_version":N,"reason":"…"}) to mux.
func Register(mux *http.ServeMux, ready func() (bool, uint64, string)) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, version, reason := ready()
		status := http.StatusOK
		body := readiness{Ready: ok, ConfigVersion: version}
		if !ok {
			status = http.StatusServiceUnavailable
			body.Reason = reason
			if body.Reason == "" {
				body.Reason = "not ready"
			}
		}
		writeJSON(w, status, body)
	})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
