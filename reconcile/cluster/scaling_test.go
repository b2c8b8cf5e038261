package cluster

import (
	"testing"
	"time"

	"swarmvlan/spec"
	"swarmvlan/state"
)

// scaleSvc is a defaulted Service document named web with the given bounds;
// sc nil means no scaling section.
func scaleSvc(replicas int, sc *spec.Scaling) *spec.Service {
	s := &spec.Service{
		Metadata: spec.ObjectMeta{Name: "web"},
		Spec:     spec.ServiceSpec{Image: "web:1", Networks: []string{"vlan40"}, Replicas: &replicas, Scaling: sc},
	}
	spec.SetDefaults(s)
	return s
}

func TestDecideScale(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	n := func(v int) *int { return &v }
	bounds := func(min, max, step int) *spec.Scaling { return &spec.Scaling{Min: min, Max: max, Step: step} }
	withTimes := func(sc *spec.Scaling, cooldown, downCooldown, stab spec.Duration) *spec.Scaling {
		sc.Cooldown, sc.DownCooldown, sc.DownStabilization = cooldown, downCooldown, stab
		return sc
	}
	up := ScaleRequest{Direction: ScaleUp, Source: ScaleSourceAPI}
	down := ScaleRequest{Direction: ScaleDown, Source: ScaleSourceAPI}
	set := func(v int) ScaleRequest { return ScaleRequest{Replicas: &v, Source: ScaleSourceCLI} }
	global := scaleSvc(1, nil)
	global.Spec.Mode = spec.ModeGlobal
	global.Spec.Scaling = bounds(1, 3, 1)

	tests := []struct {
		name  string
		svc   *spec.Service
		cur   state.ScaleIntent
		found bool
		req   ScaleRequest
		want  state.ScaleIntent
		// refusal, when the request is refused (want is then ignored and
		// the result must equal cur).
		refusal *ScaleRefusal
	}{
		{
			name:    "no scaling section",
			svc:     scaleSvc(3, nil),
			req:     up,
			refusal: &ScaleRefusal{Kind: RefusedConflict, Reason: "service web has no scaling bounds"},
		},
		{
			name:    "global mode",
			svc:     global,
			req:     up,
			refusal: &ScaleRefusal{Kind: RefusedConflict, Reason: "service web runs in global mode: it has no replica count to scale"},
		},
		{
			name: "up from spec.replicas when never scaled",
			svc:  scaleSvc(3, bounds(2, 10, 1)),
			req:  up,
			want: state.ScaleIntent{Replicas: 4, LastUp: now, Reason: "up from 3 to 4", UpdatedBy: "api"},
		},
		{
			name: "down from spec.replicas when never scaled",
			svc:  scaleSvc(3, bounds(2, 10, 1)),
			req:  down,
			want: state.ScaleIntent{Replicas: 2, LastDown: now, Reason: "down from 3 to 2", UpdatedBy: "api"},
		},
		{
			name:  "up from the recorded intent, keeping the other direction's time",
			svc:   scaleSvc(3, bounds(2, 10, 1)),
			cur:   state.ScaleIntent{Replicas: 7, LastUp: ago(time.Hour), LastDown: ago(time.Minute), Reason: "x", UpdatedBy: "orbiter"},
			found: true,
			req:   ScaleRequest{Direction: ScaleUp, Source: ScaleSourceAlertmanager, Note: "alert HighLoad"},
			want:  state.ScaleIntent{Replicas: 8, LastUp: now, LastDown: ago(time.Minute), Reason: "up from 7 to 8 (alert HighLoad)", UpdatedBy: "alertmanager"},
		},
		{
			name:    "up at the maximum",
			svc:     scaleSvc(3, bounds(2, 10, 1)),
			cur:     state.ScaleIntent{Replicas: 10},
			found:   true,
			req:     up,
			refusal: &ScaleRefusal{Kind: RefusedConflict, Limit: "max", Bound: 10, Reason: "service web is at maximum 10"},
		},
		{
			name:    "down at the minimum",
			svc:     scaleSvc(2, bounds(2, 10, 1)),
			req:     down,
			refusal: &ScaleRefusal{Kind: RefusedConflict, Limit: "min", Bound: 2, Reason: "service web is at minimum 2"},
		},
		{
			name:  "a step that would overshoot the maximum stops at it",
			svc:   scaleSvc(3, bounds(2, 10, 3)),
			cur:   state.ScaleIntent{Replicas: 9},
			found: true,
			req:   up,
			want:  state.ScaleIntent{Replicas: 10, LastUp: now, Reason: "up from 9 to 10", UpdatedBy: "api"},
		},
		{
			name:  "a step that would undershoot the minimum stops at it",
			svc:   scaleSvc(3, bounds(2, 10, 3)),
			cur:   state.ScaleIntent{Replicas: 4},
			found: true,
			req:   down,
			want:  state.ScaleIntent{Replicas: 2, LastDown: now, Reason: "down from 4 to 2", UpdatedBy: "api"},
		},
		{
			name:    "a recorded count above a lowered maximum is clamped first: up is refused",
			svc:     scaleSvc(3, bounds(2, 10, 1)),
			cur:     state.ScaleIntent{Replicas: 15},
			found:   true,
			req:     up,
			refusal: &ScaleRefusal{Kind: RefusedConflict, Limit: "max", Bound: 10, Reason: "service web is at maximum 10"},
		},
		{
			name:  "a recorded count above a lowered maximum is clamped first: down steps from the maximum",
			svc:   scaleSvc(3, bounds(2, 10, 1)),
			cur:   state.ScaleIntent{Replicas: 15},
			found: true,
			req:   down,
			want:  state.ScaleIntent{Replicas: 9, LastDown: now, Reason: "down from 10 to 9", UpdatedBy: "api"},
		},
		{
			name:  "a recorded count below a raised minimum is clamped first",
			svc:   scaleSvc(4, bounds(4, 10, 1)),
			cur:   state.ScaleIntent{Replicas: 1},
			found: true,
			req:   up,
			want:  state.ScaleIntent{Replicas: 5, LastUp: now, Reason: "up from 4 to 5", UpdatedBy: "api"},
		},
		{
			name: "an explicit higher count is a scale-up",
			svc:  scaleSvc(3, bounds(2, 10, 1)),
			req:  set(8),
			want: state.ScaleIntent{Replicas: 8, LastUp: now, Reason: "set from 3 to 8", UpdatedBy: "cli"},
		},
		{
			name:  "an explicit lower count is a scale-down",
			svc:   scaleSvc(3, bounds(2, 10, 1)),
			cur:   state.ScaleIntent{Replicas: 8, LastUp: ago(time.Hour)},
			found: true,
			req:   set(2),
			want:  state.ScaleIntent{Replicas: 2, LastUp: ago(time.Hour), LastDown: now, Reason: "set from 8 to 2", UpdatedBy: "cli"},
		},
		{
			name:    "an explicit count above the maximum",
			svc:     scaleSvc(3, bounds(2, 10, 1)),
			req:     set(11),
			refusal: &ScaleRefusal{Kind: RefusedConflict, Limit: "max", Bound: 10, Reason: "service web: 11 replicas is above the maximum 10"},
		},
		{
			name:    "an explicit count below the minimum",
			svc:     scaleSvc(3, bounds(2, 10, 1)),
			req:     set(1),
			refusal: &ScaleRefusal{Kind: RefusedConflict, Limit: "min", Bound: 2, Reason: "service web: 1 replicas is below the minimum 2"},
		},
		{
			name:  "an explicit count equal to the current one changes nothing",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "1h", "", "")),
			cur:   state.ScaleIntent{Replicas: 5, LastUp: ago(time.Minute), Reason: "r", UpdatedBy: "api"},
			found: true,
			req:   set(5),
			want:  state.ScaleIntent{Replicas: 5, LastUp: ago(time.Minute), Reason: "r", UpdatedBy: "api"},
		},
		{
			name: "an explicit count equal to spec.replicas records nothing",
			svc:  scaleSvc(3, bounds(2, 10, 1)),
			req:  set(3),
			want: state.ScaleIntent{},
		},
		{
			name:  "up inside the up cooldown",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "60s", "", "")),
			cur:   state.ScaleIntent{Replicas: 4, LastUp: ago(20 * time.Second)},
			found: true,
			req:   up,
			refusal: &ScaleRefusal{Kind: RefusedWait, RetryAfter: 40 * time.Second,
				Reason: "service web: scale-up cooldown (1m0s) since the last scale-up at 2025-03-01T11:59:40Z; retry in 40s"},
		},
		{
			name:  "up after the up cooldown",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "60s", "", "")),
			cur:   state.ScaleIntent{Replicas: 4, LastUp: ago(60 * time.Second)},
			found: true,
			req:   up,
			want:  state.ScaleIntent{Replicas: 5, LastUp: now, Reason: "up from 4 to 5", UpdatedBy: "api"},
		},
		{
			name:  "the up cooldown does not delay a scale-down",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "60s", "", "")),
			cur:   state.ScaleIntent{Replicas: 4, LastUp: ago(time.Second)},
			found: true,
			req:   down,
			want:  state.ScaleIntent{Replicas: 3, LastUp: ago(time.Second), LastDown: now, Reason: "down from 4 to 3", UpdatedBy: "api"},
		},
		{
			name:  "the down cooldown does not delay a scale-up",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "60s", "", "")),
			cur:   state.ScaleIntent{Replicas: 4, LastDown: ago(time.Second)},
			found: true,
			req:   up,
			want:  state.ScaleIntent{Replicas: 5, LastUp: now, LastDown: ago(time.Second), Reason: "up from 4 to 5", UpdatedBy: "api"},
		},
		{
			name:  "down inside the down cooldown, which defaults to cooldown",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "60s", "", "")),
			cur:   state.ScaleIntent{Replicas: 4, LastDown: ago(10 * time.Second)},
			found: true,
			req:   down,
			refusal: &ScaleRefusal{Kind: RefusedWait, RetryAfter: 50 * time.Second,
				Reason: "service web: scale-down cooldown (1m0s) since the last scale-down at 2025-03-01T11:59:50Z; retry in 50s"},
		},
		{
			name:  "downCooldown longer than cooldown",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "60s", "5m", "")),
			cur:   state.ScaleIntent{Replicas: 4, LastDown: ago(2 * time.Minute)},
			found: true,
			req:   down,
			refusal: &ScaleRefusal{Kind: RefusedWait, RetryAfter: 3 * time.Minute,
				Reason: "service web: scale-down cooldown (5m0s) since the last scale-down at 2025-03-01T11:58:00Z; retry in 3m0s"},
		},
		{
			name:  "downCooldown shorter than cooldown",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "5m", "10s", "")),
			cur:   state.ScaleIntent{Replicas: 4, LastDown: ago(20 * time.Second)},
			found: true,
			req:   down,
			want:  state.ScaleIntent{Replicas: 3, LastDown: now, Reason: "down from 4 to 3", UpdatedBy: "api"},
		},
		{
			name:  "down inside the stabilization window after a scale-up",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "", "", "5m")),
			cur:   state.ScaleIntent{Replicas: 4, LastUp: ago(time.Minute)},
			found: true,
			req:   down,
			refusal: &ScaleRefusal{Kind: RefusedWait, RetryAfter: 4 * time.Minute,
				Reason: "service web: scale-down stabilization (5m0s) since the last scale-up at 2025-03-01T11:59:00Z; retry in 4m0s"},
		},
		{
			name:  "an explicit lower count inside the stabilization window",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "", "", "5m")),
			cur:   state.ScaleIntent{Replicas: 4, LastUp: ago(time.Minute)},
			found: true,
			req:   set(2),
			refusal: &ScaleRefusal{Kind: RefusedWait, RetryAfter: 4 * time.Minute,
				Reason: "service web: scale-down stabilization (5m0s) since the last scale-up at 2025-03-01T11:59:00Z; retry in 4m0s"},
		},
		{
			name:  "down after the stabilization window",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "", "", "5m")),
			cur:   state.ScaleIntent{Replicas: 4, LastUp: ago(5 * time.Minute)},
			found: true,
			req:   down,
			want:  state.ScaleIntent{Replicas: 3, LastUp: ago(5 * time.Minute), LastDown: now, Reason: "down from 4 to 3", UpdatedBy: "api"},
		},
		{
			name:  "the stabilization window does not delay a scale-up",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "", "", "5m")),
			cur:   state.ScaleIntent{Replicas: 4, LastUp: ago(time.Second)},
			found: true,
			req:   up,
			want:  state.ScaleIntent{Replicas: 5, LastUp: now, Reason: "up from 4 to 5", UpdatedBy: "api"},
		},
		{
			name:  "an explicit higher count inside the up cooldown",
			svc:   scaleSvc(3, withTimes(bounds(2, 10, 1), "60s", "", "")),
			cur:   state.ScaleIntent{Replicas: 4, LastUp: ago(30 * time.Second)},
			found: true,
			req:   set(9),
			refusal: &ScaleRefusal{Kind: RefusedWait, RetryAfter: 30 * time.Second,
				Reason: "service web: scale-up cooldown (1m0s) since the last scale-up at 2025-03-01T11:59:30Z; retry in 30s"},
		},
		{
			name:    "at the bound inside the cooldown: the bound is reported",
			svc:     scaleSvc(3, withTimes(bounds(2, 10, 1), "60s", "", "")),
			cur:     state.ScaleIntent{Replicas: 10, LastUp: ago(time.Second)},
			found:   true,
			req:     up,
			refusal: &ScaleRefusal{Kind: RefusedConflict, Limit: "max", Bound: 10, Reason: "service web is at maximum 10"},
		},
		{
			name:    "direction and replicas together",
			svc:     scaleSvc(3, bounds(2, 10, 1)),
			req:     ScaleRequest{Direction: ScaleUp, Replicas: n(4)},
			refusal: &ScaleRefusal{Kind: RefusedInvalid, Reason: "direction, replicas: give one of them, not both"},
		},
		{
			name:    "neither direction nor replicas",
			svc:     scaleSvc(3, bounds(2, 10, 1)),
			req:     ScaleRequest{Source: ScaleSourceAPI},
			refusal: &ScaleRefusal{Kind: RefusedInvalid, Reason: `direction: required ("up" or "down"), or give replicas`},
		},
		{
			name:    "an unknown direction",
			svc:     scaleSvc(3, bounds(2, 10, 1)),
			req:     ScaleRequest{Direction: "sideways"},
			refusal: &ScaleRefusal{Kind: RefusedInvalid, Reason: `direction: must be "up" or "down", not "sideways"`},
		},
		{
			name:    "a negative count",
			svc:     scaleSvc(3, bounds(2, 10, 1)),
			req:     set(-1),
			refusal: &ScaleRefusal{Kind: RefusedInvalid, Reason: "replicas: must not be negative, got -1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, refusal := DecideScale(tt.svc, tt.cur, tt.found, tt.req, now)
			if tt.refusal != nil {
				if refusal == nil {
					t.Fatalf("accepted with %+v, want refusal %+v", got, *tt.refusal)
				}
				if *refusal != *tt.refusal {
					t.Errorf("refusal\n got %+v\nwant %+v", *refusal, *tt.refusal)
				}
				if got != tt.cur {
					t.Errorf("refused request changed the intent: %+v, want %+v", got, tt.cur)
				}
				return
			}
			if refusal != nil {
				t.Fatalf("refused: %+v", *refusal)
			}
			if got != tt.want {
				t.Errorf("intent\n got %+v\nwant %+v", got, tt.want)
			}
			if got.Replicas != 0 && EffectiveReplicas(tt.svc, &got.Replicas) != got.Replicas {
				t.Errorf("decided count %d is outside the bounds", got.Replicas)
			}
		})
	}
}

// TestDecideScaleSequence walks a service through a series of requests with
// cooldowns and checks that the count never leaves the bounds and that the
// cooldowns start only on a change.
func TestDecideScaleSequence(t *testing.T) {
	svc := scaleSvc(2, &spec.Scaling{Min: 1, Max: 4, Step: 2, Cooldown: "10s", DownStabilization: "30s"})
	start := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at       time.Duration
		dir      string
		replicas int         // count in force afterwards
		kind     RefusalKind // 0: accepted
	}{
		{0, ScaleUp, 4, 0},
		{time.Second, ScaleUp, 4, RefusedConflict},   // at max
		{2 * time.Second, ScaleDown, 4, RefusedWait}, // stabilization
		{30 * time.Second, ScaleDown, 2, 0},
		{31 * time.Second, ScaleDown, 2, RefusedWait}, // down cooldown
		{40 * time.Second, ScaleDown, 1, 0},           // clamped to min
		{41 * time.Second, ScaleUp, 3, 0},             // up cooldown long over
		{45 * time.Second, ScaleUp, 3, RefusedWait},
	}
	var cur state.ScaleIntent
	found := false
	for i, s := range steps {
		next, refusal := DecideScale(svc, cur, found, ScaleRequest{Direction: s.dir, Source: ScaleSourceAPI}, start.Add(s.at))
		var kind RefusalKind
		if refusal != nil {
			kind = refusal.Kind
		} else if next != cur {
			cur, found = next, true
		}
		in := EffectiveReplicas(svc, &cur.Replicas)
		if kind != s.kind || in != s.replicas {
			t.Fatalf("step %d (%s at %v): refusal %d, replicas %d; want refusal %d, replicas %d", i, s.dir, s.at, kind, in, s.kind, s.replicas)
		}
	}
}
