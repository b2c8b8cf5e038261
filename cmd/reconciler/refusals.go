package main

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"swarmvlan/state"
)

// refusalLog logs what Consul refuses for good (a missing ACL permission,
// an untrusted certificate): once per distinct refusal per interval, since
// the loops that meet them retry every few seconds.
type refusalLog struct {
	log   *slog.Logger
	every time.Duration

	mu   sync.Mutex
	last map[string]time.Time
}

func newRefusalLog(log *slog.Logger, every time.Duration) *refusalLog {
	return &refusalLog{log: log, every: every, last: map[string]time.Time{}}
}

// note is the store's Config.OnRefused.
func (r *refusalLog) note(err error) {
	msg := err.Error()
	r.mu.Lock()
	if t, ok := r.last[msg]; ok && time.Since(t) < r.every {
		r.mu.Unlock()
		return
	}
	if len(r.last) > 1000 {
		// Distinct refusals are bounded by the keys and services named in
		// them; forgetting them all only logs each once more.
		clear(r.last)
	}
	r.last[msg] = time.Now()
	r.mu.Unlock()
	var pe *state.PermissionError
	var te *state.TLSError
	switch {
	case errors.As(err, &pe):
		r.log.Warn("consul permission denied; retrying, and nothing is removed or released because of it",
			"op", pe.Op, "resource", pe.Resource, "permission", pe.Permission, "consul", pe.Consul)
	case errors.As(err, &te):
		r.log.Error("consul TLS refused; retrying", "addr", te.Addr, "problem", te.Problem, "err", te.Err)
	default:
		r.log.Warn("consul refused", "err", err)
	}
}
