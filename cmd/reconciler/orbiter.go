package main

import (
	"fmt"
	"net/http"
	"sort"
	"time"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// orbiterAutoscaler is the autoscaler name Orbiter's autodetect mode gave
// every Swarm service (autoswarm/<service>); GET /v1/orbiter/autoscaler
// lists each service under it. Requests name any autoscaler: here it only
// groups, and is recorded with the decision.
const orbiterAutoscaler = "autoswarm"

// orbiterBody is Orbiter's scale request: direction true scales up, false
// down. service_id is accepted, as Orbiter did, and not needed: the path
// names the service.
type orbiterBody struct {
	Direction *bool  `json:"direction"`
	ServiceID string `json:"service_id"`
}

// serveOrbiterBody is Orbiter's POST /v1/orbiter/handle/{autoscaler}/{service}
// with the body {"direction": true} or {"direction": false}. Unlike
// Orbiter, which took a missing or unreadable body for a scale-down, the
// direction is required.
func (a *scaleAPI) serveOrbiterBody(w http.ResponseWriter, r *http.Request) {
	var body orbiterBody
	if code, err := decodeJSONBody(w, r, &body, maxScaleBody, false); err != nil {
		a.metrics.countScale(cluster.ScaleSourceOrbiter, scaleResultInvalid)
		writeJSON(w, code, errorReply{Error: err.Error()})
		return
	}
	if body.Direction == nil {
		a.metrics.countScale(cluster.ScaleSourceOrbiter, scaleResultInvalid)
		writeJSON(w, http.StatusBadRequest, errorReply{Error: "direction: required (true scales up, false down)"})
		return
	}
	dir := cluster.ScaleDown
	if *body.Direction {
		dir = cluster.ScaleUp
	}
	a.respond(w, r, r.PathValue("service"), cluster.ScaleRequest{
		Direction: dir,
		Source:    cluster.ScaleSourceOrbiter,
		Note:      "orbiter autoscaler " + r.PathValue("autoscaler"),
	})
}

// orbiterAutoscalerEntry is one entry of GET /v1/orbiter/autoscaler: Orbiter's
// {"name": "<autoscaler>/<service>"} and, beside it, the service's bounds
// and the count in force.
type orbiterAutoscalerEntry struct {
	Name     string `json:"name"`
	Service  string `json:"service"`
	Replicas int    `json:"replicas"`
	Min      int    `json:"min"`
	Max      int    `json:"max"`
	Step     int    `json:"step"`
}

// serveOrbiterList is Orbiter's GET /v1/orbiter/autoscaler: {"data": [...]},
// one entry per service that can scale (replicated, with spec.scaling).
func (a *scaleAPI) serveOrbiterList(w http.ResponseWriter, r *http.Request) {
	if !a.synced() {
		writeJSON(w, http.StatusServiceUnavailable, errorReply{Error: "spec view not yet read from Consul; retry shortly"})
		return
	}
	list := []orbiterAutoscalerEntry{}
	for _, doc := range a.view.List(spec.KindService) {
		svc := doc.Object.(*spec.Service)
		sc := svc.Spec.Scaling
		if sc == nil || svc.Spec.IsGlobal() {
			continue
		}
		si, _, found, err := a.store.ScaleIntent(r.Context(), svc.Metadata.Name)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, errorReply{Error: err.Error()})
			return
		}
		list = append(list, orbiterAutoscalerEntry{
			Name:     orbiterAutoscaler + "/" + svc.Metadata.Name,
			Service:  svc.Metadata.Name,
			Replicas: cluster.EffectiveReplicas(svc, recordedCount(si, found)),
			Min:      sc.Min, Max: sc.Max, Step: max(sc.Step, 1),
		})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	writeJSON(w, http.StatusOK, struct {
		Data []orbiterAutoscalerEntry `json:"data"`
	}{list})
}

// serveOrbiterHealth is Orbiter's GET /v1/orbiter/health: {"status": true,
// "info": {}} and 200 when the daemon can decide scale requests; status
// false, what is wrong in info and 500 when not.
func (a *scaleAPI) serveOrbiterHealth(w http.ResponseWriter, r *http.Request) {
	info := map[string]string{}
	if !a.synced() {
		info["consul"] = "spec view not yet read from Consul"
	}
	code := http.StatusOK
	if len(info) > 0 {
		code = http.StatusInternalServerError
	}
	writeJSON(w, code, struct {
		Status bool              `json:"status"`
		Info   map[string]string `json:"info"`
	}{len(info) == 0, info})
}

// serviceScaleReply is GET /v1/services/{name}: the count in force and
// where it comes from, the bounds, the cooldowns left and the last decision.
type serviceScaleReply struct {
	Service string `json:"service"`
	Mode    string `json:"mode"`
	// Replicas is the count in force: the last scale decision's, else
	// spec.replicas, within the bounds. SpecReplicas is the document's.
	Replicas     int  `json:"replicas"`
	SpecReplicas *int `json:"specReplicas,omitempty"`
	// Scaling is the document's spec.scaling; nil: the service does not
	// scale over the API.
	Scaling *spec.Scaling `json:"scaling,omitempty"`
	// CooldownLeftSeconds is how long a scale-up and a scale-down would be
	// refused for a cooldown (or, down, the stabilization window); 0: not.
	CooldownLeftSeconds *cooldownsLeft `json:"cooldownLeftSeconds,omitempty"`
	// LastDecision is the recorded scale intent; nil: never scaled.
	LastDecision *lastDecision `json:"lastDecision,omitempty"`
}

type cooldownsLeft struct {
	Up   int `json:"up"`
	Down int `json:"down"`
}

type lastDecision struct {
	Replicas int `json:"replicas"`
	// Source is api, orbiter, alertmanager or cli.
	Source   string     `json:"source"`
	Reason   string     `json:"reason"`
	LastUp   *time.Time `json:"lastUp,omitempty"`
	LastDown *time.Time `json:"lastDown,omitempty"`
}

// serveService is GET /v1/services/{name}, for scripts that look before
// they scale.
func (a *scaleAPI) serveService(w http.ResponseWriter, r *http.Request) {
	if !a.synced() {
		writeJSON(w, http.StatusServiceUnavailable, errorReply{Error: "spec view not yet read from Consul; retry shortly"})
		return
	}
	name := r.PathValue("name")
	doc, ok := a.view.Get(reconcile.Key{Kind: spec.KindService, Name: name})
	if !ok {
		writeJSON(w, http.StatusNotFound, errorReply{Error: fmt.Sprintf("service %q not found", name)})
		return
	}
	svc := doc.Object.(*spec.Service)
	si, _, found, err := a.store.ScaleIntent(r.Context(), name)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, errorReply{Error: err.Error()})
		return
	}
	rep := serviceScaleReply{
		Service:      name,
		Mode:         svc.Spec.ModeOrDefault(),
		Replicas:     cluster.EffectiveReplicas(svc, recordedCount(si, found)),
		SpecReplicas: svc.Spec.Replicas,
		Scaling:      svc.Spec.Scaling,
	}
	if svc.Spec.Scaling != nil && !svc.Spec.IsGlobal() {
		// The cooldowns left are what DecideScale would refuse a request
		// for now: one reading of the rules, not a second.
		now := time.Now()
		wait := func(dir string) int {
			_, ref := cluster.DecideScale(svc, si, found, cluster.ScaleRequest{Direction: dir, Source: cluster.ScaleSourceAPI}, now)
			if ref != nil && ref.Kind == cluster.RefusedWait {
				return retryAfterSeconds(ref.RetryAfter)
			}
			return 0
		}
		rep.CooldownLeftSeconds = &cooldownsLeft{Up: wait(cluster.ScaleUp), Down: wait(cluster.ScaleDown)}
	}
	if found {
		ld := &lastDecision{Replicas: si.Replicas, Source: si.UpdatedBy, Reason: si.Reason}
		if !si.LastUp.IsZero() {
			ld.LastUp = &si.LastUp
		}
		if !si.LastDown.IsZero() {
			ld.LastDown = &si.LastDown
		}
		rep.LastDecision = ld
	}
	writeJSON(w, http.StatusOK, rep)
}

func (a *scaleAPI) synced() bool {
	select {
	case <-a.view.Synced():
		return true
	default:
		return false
	}
}

// recordedCount is the recorded count for EffectiveReplicas: nil when the
// service was never scaled.
func recordedCount(si state.ScaleIntent, found bool) *int {
	if !found {
		return nil
	}
	n := si.Replicas
	return &n
}
