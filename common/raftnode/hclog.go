package raftnode

import (
	"context"
	"io"
	"log"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// hcLogger forwards hashicorp/raft's hclog output to slog, dropping lines below its level so raft's chatty
// info lines (one per election, per snapshot) do not flood the service log.
type hcLogger struct {
	logger  *slog.Logger
	name    string
	args    []any
	level   *atomic.Int32
	limiter *repeatLimiter
}

// repeatInterval is how often one raft message text may be logged. A data-plane node that went away
// without leaving makes the leader log a failed heartbeat several times a second until it returns.
const repeatInterval = 10 * time.Second

// repeatLimiter lets one line per message text through per repeatInterval and counts the dropped ones.
// raft's message texts are constants, so the map stays small.
type repeatLimiter struct {
	mu   sync.Mutex
	seen map[string]*repeatState
	now  func() time.Time
}

type repeatState struct {
	last       time.Time
	suppressed int
}

// allow reports whether msg may be logged now and how many lines of it were dropped since the last one.
func (r *repeatLimiter) allow(msg string) (bool, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	st, ok := r.seen[msg]
	if !ok {
		r.seen[msg] = &repeatState{last: now}
		return true, 0
	}
	if now.Sub(st.last) < repeatInterval {
		st.suppressed++
		return false, 0
	}
	dropped := st.suppressed
	st.last, st.suppressed = now, 0
	return true, dropped
}

var _ hclog.Logger = (*hcLogger)(nil)

func newHCLogger(logger *slog.Logger, level hclog.Level) *hcLogger {
	l := &hcLogger{logger: logger, level: new(atomic.Int32), limiter: &repeatLimiter{seen: map[string]*repeatState{}, now: time.Now}}
	l.level.Store(int32(level))
	return l
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Info, hclog.NoLevel:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (l *hcLogger) enabled(level hclog.Level) bool {
	min := hclog.Level(l.level.Load())
	return min != hclog.Off && level >= min
}

func (l *hcLogger) Log(level hclog.Level, msg string, args ...any) {
	if !l.enabled(level) {
		return
	}
	ok, dropped := l.limiter.allow(msg)
	if !ok {
		return
	}
	attrs := make([]any, 0, len(l.args)+len(args)+4)
	if l.name != "" {
		attrs = append(attrs, "logger", l.name)
	}
	if dropped > 0 {
		attrs = append(attrs, "repeated", dropped)
	}
	attrs = append(attrs, l.args...)
	attrs = append(attrs, normalizeArgs(args)...)
	l.logger.Log(context.Background(), slogLevel(level), msg, attrs...)
}

// normalizeArgs stringifies raft's key values that slog would render poorly (errors, Stringers are fine)
// and pads an odd list the way hclog does.
func normalizeArgs(args []any) []any {
	if len(args)%2 == 1 {
		args = append(args[:len(args):len(args)], "<missing>")
	}
	for i := 1; i < len(args); i += 2 {
		if err, ok := args[i].(error); ok {
			args[i] = err.Error()
		}
	}
	return args
}

func (l *hcLogger) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }
func (l *hcLogger) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }
func (l *hcLogger) Info(msg string, args ...any)  { l.Log(hclog.Info, msg, args...) }
func (l *hcLogger) Warn(msg string, args ...any)  { l.Log(hclog.Warn, msg, args...) }
func (l *hcLogger) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

func (l *hcLogger) IsTrace() bool { return l.enabled(hclog.Trace) }
func (l *hcLogger) IsDebug() bool { return l.enabled(hclog.Debug) }
func (l *hcLogger) IsInfo() bool  { return l.enabled(hclog.Info) }
func (l *hcLogger) IsWarn() bool  { return l.enabled(hclog.Warn) }
func (l *hcLogger) IsError() bool { return l.enabled(hclog.Error) }

func (l *hcLogger) ImpliedArgs() []any { return l.args }

func (l *hcLogger) With(args ...any) hclog.Logger {
	c := *l
	c.args = append(append([]any(nil), l.args...), normalizeArgs(args)...)
	return &c
}

func (l *hcLogger) Name() string { return l.name }

func (l *hcLogger) Named(name string) hclog.Logger {
	c := *l
	if c.name != "" {
		c.name += "." + name
	} else {
		c.name = name
	}
	return &c
}

func (l *hcLogger) ResetNamed(name string) hclog.Logger {
	c := *l
	c.name = name
	return &c
}

func (l *hcLogger) SetLevel(level hclog.Level) { l.level.Store(int32(level)) }

func (l *hcLogger) GetLevel() hclog.Level { return hclog.Level(l.level.Load()) }

func (l *hcLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(opts), "", 0)
}

func (l *hcLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer { return stdWriter{l} }

// stdWriter turns lines written through a standard *log.Logger into hclog calls, reading the "[LEVEL]"
// prefix raft's dependencies use.
type stdWriter struct{ l *hcLogger }

func (w stdWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := hclog.Info
	for prefix, lv := range map[string]hclog.Level{"[TRACE]": hclog.Trace, "[DEBUG]": hclog.Debug, "[INFO]": hclog.Info, "[WARN]": hclog.Warn, "[ERR]": hclog.Error, "[ERROR]": hclog.Error} {
		if strings.HasPrefix(line, prefix) {
			level = lv
			line = strings.TrimSpace(strings.TrimPrefix(line, prefix))
			break
		}
	}
	w.l.Log(level, line)
	return len(p), nil
}
