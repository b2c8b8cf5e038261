package cluster

import (
	"context"
	"fmt"
	"time"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// Scale directions.
const (
	ScaleUp   = "up"
	ScaleDown = "down"
)

// Scale request sources, recorded as the intent's UpdatedBy.
const (
	ScaleSourceAPI          = "api"
	ScaleSourceOrbiter      = "orbiter"
	ScaleSourceAlertmanager = "alertmanager"
	ScaleSourceCLI          = "cli"
)

// ScaleRequest asks for one scale change: a step up or down, or an explicit
// count. Exactly one of Direction and Replicas is set.
type ScaleRequest struct {
	// Direction is ScaleUp or ScaleDown: one scaling.step.
	Direction string
	// Replicas sets the count explicitly.
	Replicas *int
	// Source says which front door the request came through (ScaleSource*).
	Source string
	// Note is optional context recorded in the intent's Reason (an alert
	// name, an Orbiter autoscaler).
	Note string
}

// RefusalKind says what kind of no a scale request got.
type RefusalKind int

// The kinds of ScaleRefusal.
const (
	// RefusedInvalid: the request itself is malformed.
	RefusedInvalid RefusalKind = iota + 1
	// RefusedConflict: the service cannot be scaled that way (no bounds,
	// global, at or beyond a bound).
	RefusedConflict
	// RefusedWait: inside a cooldown or the scale-down stabilization
	// window; RetryAfter says how long.
	RefusedWait
)

// ScaleRefusal says why a scale request changed nothing.
type ScaleRefusal struct {
	Kind   RefusalKind
	Reason string
	// Limit is "min" or "max" when the request hit that bound
	// (RefusedConflict), and Bound is its value.
	Limit string
	Bound int
	// RetryAfter is when a request in the same direction may succeed
	// (RefusedWait).
	RetryAfter time.Duration
}

// Error makes a refusal usable as an error (for the CLI's exit).
func (r *ScaleRefusal) Error() string { return r.Reason }

// DecideScale computes the scale intent that results from req, given the
// intent recorded so far (found false: never scaled) and the service
// document in force. It is pure: the caller supplies now and writes the
// result with check-and-set (state.Store.UpdateScaleIntent), so two
// managers deciding at once never lose an update.
//
// The count starts from the recorded intent, else spec.replicas, clamped
// into scaling.min..max first, so bounds lowered after a scale-up take
// effect on the next request. A step that would overshoot a bound stops at
// the bound; a request is refused (409) only when the count is already at
// the bound it pushes against, or when an explicit count lies outside the
// bounds. A request that leaves the count where it is (an explicit count
// equal to the current one) is no scale event: cur is returned as it was,
// nothing needs writing and no cooldown starts. So the caller writes the
// result only when it differs from cur, and the count in force is always
// EffectiveReplicas of what is recorded.
//
// Cooldowns live in the intent, not in memory, so a restart or a deploy does
// not reset them (Orbiter's did), and they are separate per direction: a
// scale-up does not delay an urgent scale-down, nor the reverse. A
// scale-down within scaling.downStabilization of the last scale-up is
// refused too, so a short dip does not undo a needed scale-up. An explicit
// count is an up or a down by the sign of its change.
func DecideScale(svc *spec.Service, cur state.ScaleIntent, found bool, req ScaleRequest, now time.Time) (state.ScaleIntent, *ScaleRefusal) {
	name := svc.Metadata.Name
	sc := svc.Spec.Scaling
	if svc.Spec.Mode == spec.ModeGlobal {
		return cur, &ScaleRefusal{Kind: RefusedConflict, Reason: fmt.Sprintf("service %s runs in global mode: it has no replica count to scale", name)}
	}
	if sc == nil {
		return cur, &ScaleRefusal{Kind: RefusedConflict, Reason: fmt.Sprintf("service %s has no scaling bounds", name)}
	}
	if r := scaleCheckRequest(req); r != nil {
		return cur, r
	}
	var recorded *int
	if found {
		recorded = &cur.Replicas
	}
	base := EffectiveReplicas(svc, recorded)
	step := max(sc.Step, 1)

	target := 0
	switch {
	case req.Replicas != nil:
		target = *req.Replicas
		if target > sc.Max {
			return cur, &ScaleRefusal{Kind: RefusedConflict, Limit: "max", Bound: sc.Max,
				Reason: fmt.Sprintf("service %s: %d replicas is above the maximum %d", name, target, sc.Max)}
		}
		if target < sc.Min {
			return cur, &ScaleRefusal{Kind: RefusedConflict, Limit: "min", Bound: sc.Min,
				Reason: fmt.Sprintf("service %s: %d replicas is below the minimum %d", name, target, sc.Min)}
		}
	case req.Direction == ScaleUp:
		if base >= sc.Max {
			return cur, &ScaleRefusal{Kind: RefusedConflict, Limit: "max", Bound: sc.Max,
				Reason: fmt.Sprintf("service %s is at maximum %d", name, sc.Max)}
		}
		target = min(base+step, sc.Max)
	default: // ScaleDown
		if base <= sc.Min {
			return cur, &ScaleRefusal{Kind: RefusedConflict, Limit: "min", Bound: sc.Min,
				Reason: fmt.Sprintf("service %s is at minimum %d", name, sc.Min)}
		}
		target = max(base-step, sc.Min)
	}

	if target == base {
		return cur, nil
	}

	cooldown := sc.Cooldown.Duration()
	up := target > base
	if up {
		if wait := scaleWait(cur.LastUp, cooldown, now); wait > 0 {
			return cur, &ScaleRefusal{Kind: RefusedWait, RetryAfter: wait,
				Reason: fmt.Sprintf("service %s: scale-up cooldown (%v) since the last scale-up at %s; retry in %v",
					name, cooldown, cur.LastUp.UTC().Format(time.RFC3339), scaleRound(wait))}
		}
	} else {
		downCooldown := cooldown
		if sc.DownCooldown != "" {
			downCooldown = sc.DownCooldown.Duration()
		}
		if wait := scaleWait(cur.LastDown, downCooldown, now); wait > 0 {
			return cur, &ScaleRefusal{Kind: RefusedWait, RetryAfter: wait,
				Reason: fmt.Sprintf("service %s: scale-down cooldown (%v) since the last scale-down at %s; retry in %v",
					name, downCooldown, cur.LastDown.UTC().Format(time.RFC3339), scaleRound(wait))}
		}
		stab := sc.DownStabilization.Duration()
		if wait := scaleWait(cur.LastUp, stab, now); wait > 0 {
			return cur, &ScaleRefusal{Kind: RefusedWait, RetryAfter: wait,
				Reason: fmt.Sprintf("service %s: scale-down stabilization (%v) since the last scale-up at %s; retry in %v",
					name, stab, cur.LastUp.UTC().Format(time.RFC3339), scaleRound(wait))}
		}
	}

	next := cur
	next.Replicas = target
	if up {
		next.LastUp = now
	} else {
		next.LastDown = now
	}
	next.Reason = scaleReason(req, base, target)
	next.UpdatedBy = req.Source
	return next, nil
}

// scaleCheckRequest refuses a request that names neither or both of a
// direction and a count, an unknown direction or a negative count.
func scaleCheckRequest(req ScaleRequest) *ScaleRefusal {
	bad := func(msg string) *ScaleRefusal { return &ScaleRefusal{Kind: RefusedInvalid, Reason: msg} }
	switch {
	case req.Replicas != nil && req.Direction != "":
		return bad("direction, replicas: give one of them, not both")
	case req.Replicas != nil:
		if *req.Replicas < 0 {
			return bad(fmt.Sprintf("replicas: must not be negative, got %d", *req.Replicas))
		}
	case req.Direction == ScaleUp, req.Direction == ScaleDown:
	case req.Direction == "":
		return bad(`direction: required ("up" or "down"), or give replicas`)
	default:
		return bad(fmt.Sprintf(`direction: must be "up" or "down", not %q`, req.Direction))
	}
	return nil
}

// scaleWait is how long until period has passed since last (0: it has, or
// there was no last event).
func scaleWait(last time.Time, period time.Duration, now time.Time) time.Duration {
	if last.IsZero() || period <= 0 {
		return 0
	}
	return last.Add(period).Sub(now)
}

// scaleRound rounds a wait up to the second for messages.
func scaleRound(d time.Duration) time.Duration {
	return (d + time.Second - 1).Truncate(time.Second)
}

func scaleReason(req ScaleRequest, from, to int) string {
	var s string
	if req.Replicas != nil {
		s = fmt.Sprintf("set from %d to %d", from, to)
	} else {
		s = fmt.Sprintf("%s from %d to %d", req.Direction, from, to)
	}
	if req.Note != "" {
		s += " (" + req.Note + ")"
	}
	return s
}

// ScaleOutcome is what one accepted scale request did; it is also the scale
// API's answer.
type ScaleOutcome struct {
	Service string `json:"service"`
	// Replicas is the count in force afterwards, Previous the one before.
	Replicas int `json:"replicas"`
	Previous int `json:"previous"`
	Min      int `json:"min"`
	Max      int `json:"max"`
}

// Changed says whether the request moved the count.
func (o ScaleOutcome) Changed() bool { return o.Replicas != o.Previous }

// ApplyScale decides req against the service's recorded intent and writes
// the result with check-and-set, retrying on conflict, so concurrent
// requests through any manager (or the CLI) never lose one. A refusal
// changes nothing and is returned as such; err is for Consul trouble.
func ApplyScale(ctx context.Context, store *state.Store, svc *spec.Service, req ScaleRequest) (ScaleOutcome, *ScaleRefusal, error) {
	name := svc.Metadata.Name
	out := ScaleOutcome{Service: name}
	if sc := svc.Spec.Scaling; sc != nil {
		out.Min, out.Max = sc.Min, sc.Max
	}
	var refusal *ScaleRefusal
	recorded := false
	intent, err := store.UpdateScaleIntent(ctx, name, func(cur *state.ScaleIntent, found bool) (*state.ScaleIntent, error) {
		// fn runs again after a lost race: nothing from a previous round
		// may leak into this one.
		refusal, recorded = nil, found
		out.Previous = EffectiveReplicas(svc, intentCount(*cur, found))
		next, r := DecideScale(svc, *cur, found, req, time.Now())
		if r != nil {
			refusal = r
			return nil, nil
		}
		if next == *cur {
			return nil, nil
		}
		recorded = true
		return &next, nil
	})
	if err != nil {
		return out, nil, err
	}
	if refusal != nil {
		out.Replicas = out.Previous
		return out, refusal, nil
	}
	out.Replicas = EffectiveReplicas(svc, intentCount(intent, recorded))
	return out, nil, nil
}

// intentCount is the recorded count for EffectiveReplicas: nil when the
// service was never scaled, so spec.replicas is in force.
func intentCount(si state.ScaleIntent, found bool) *int {
	if !found {
		return nil
	}
	n := si.Replicas
	return &n
}
