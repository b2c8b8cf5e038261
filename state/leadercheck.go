package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// The leader check: an HTTP check on the local Consul agent against the
// process's own /healthz, to which the leader lock's session is bound
// (beside serfHealth). Consul invalidates the session within milliseconds
// of the check turning critical, so a dead or hung leader is replaced after
// about LeaderCheckFailures×LeaderCheckInterval plus the lock delay, not
// after a TTL session's 2×TTL.
const (
	// LeaderCheckInterval is Consul's minimum check interval.
	LeaderCheckInterval = time.Second
	// LeaderCheckTimeout bounds one probe; a stopped process accepts the
	// TCP handshake (the kernel completes it) but never answers.
	LeaderCheckTimeout = 500 * time.Millisecond
	// LeaderCheckFailures is how many probes in a row must fail before the
	// check turns critical: one slow probe does not cost the leadership.
	LeaderCheckFailures = 2
	// DefaultLeaderLockDelay is the lock delay of a check-bound leader
	// session: what lets in-flight writes of a deposed leader land before
	// a successor can take the lock.
	DefaultLeaderLockDelay = 500 * time.Millisecond

	// leaderCheckPrefix starts every leader check's ID; the owner and a
	// random part follow, separated by ':'.
	leaderCheckPrefix = "swarmvlan-leader:"
	// serfHealth is the agent's own liveness check. A session given
	// NodeChecks is bound to those alone, so it must be listed.
	serfHealth = "serfHealth"
)

// LeaderCheck describes the agent check a leader lock's session is bound
// to (see LeaderOptions.Check).
type LeaderCheck struct {
	// URL is what the local agent probes with GET: the process's /healthz,
	// at an address the agent reaches (loopback when they share a host).
	URL string
	// Owner names this process among those using the same agent, e.g. the
	// node name. A leader check of the same owner found on the agent is a
	// dead predecessor's and is deregistered, so processes sharing an
	// agent need distinct owners.
	Owner string
	// TLSSkipVerify makes the agent accept any certificate on an https URL
	// (a loopback address is rarely in the certificate).
	TLSSkipVerify bool
}

func (c LeaderCheck) validate() error {
	if c.URL == "" {
		return fmt.Errorf("leader check: no URL")
	}
	return nil
}

// newLeaderCheckID returns a check ID unique to this process and this
// session: leaderCheckPrefix, the owner (anything but letters, digits,
// '.', '_' and '-' replaced), ':', 16 hex digits.
func newLeaderCheckID(owner string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return leaderCheckOwnerPrefix(owner) + hex.EncodeToString(b)
}

func leaderCheckOwnerPrefix(owner string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		}
		return '_'
	}, owner)
	return leaderCheckPrefix + clean + ":"
}

// isPredecessorCheck reports whether id is a leader check of owner other
// than mine.
func isPredecessorCheck(id, owner, mine string) bool {
	rest, ok := strings.CutPrefix(id, leaderCheckOwnerPrefix(owner))
	return ok && id != mine && !strings.Contains(rest, ":")
}

// registerLeaderCheck deregisters the leader checks a dead predecessor of
// the same owner left on the local agent (their sessions would otherwise
// hold the lock until the checks failed, and with the predecessor's port
// taken over by this process they never would), then registers id,
// passing, so that a session can be bound to it at once. Registering an
// existing id again replaces it.
func (s *Store) registerLeaderCheck(ctx context.Context, id string, c LeaderCheck) error {
	agent := s.client.Agent()
	q := (&api.QueryOptions{}).WithContext(ctx)
	checks, err := agent.ChecksWithFilterOpts("", q)
	if err != nil {
		return fmt.Errorf("leader check: list the agent's checks: %w", s.denied(OpAgentServices, "agent checks", err))
	}
	for old := range checks {
		if isPredecessorCheck(old, c.Owner, id) {
			if err := agent.CheckDeregisterOpts(old, q); err != nil {
				return fmt.Errorf("leader check %s: deregister a predecessor's: %w", old, s.denied(OpAgentDeregister, old, err))
			}
		}
	}
	reg := &api.AgentCheckRegistration{
		ID:    id,
		Name:  "swarmvlan leader " + c.Owner,
		Notes: "Bound to the session of the swarmvlan leader lock: critical ends the leadership.",
		AgentServiceCheck: api.AgentServiceCheck{
			HTTP:                   c.URL,
			Method:                 "GET",
			Interval:               LeaderCheckInterval.String(),
			Timeout:                LeaderCheckTimeout.String(),
			TLSSkipVerify:          c.TLSSkipVerify,
			Status:                 api.HealthPassing,
			FailuresBeforeCritical: LeaderCheckFailures,
		},
	}
	if err := agent.CheckRegisterOpts(reg, q); err != nil {
		return fmt.Errorf("leader check %s: register: %w", id, s.denied(OpAgentRegister, id, err))
	}
	return nil
}

// deregisterLeaderCheck removes id from the local agent.
func (s *Store) deregisterLeaderCheck(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := s.client.Agent().CheckDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("leader check %s: deregister: %w", id, s.denied(OpAgentDeregister, id, err))
	}
	return nil
}
