package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"swarmvlan/reconcile"
	"swarmvlan/reconcile/cluster"
	"swarmvlan/spec"
	"swarmvlan/state"
)

// Body size limits: a scale request is a few bytes; Alertmanager sends
// every alert of a group with its labels and annotations.
const (
	maxScaleBody        = 64 << 10
	maxAlertmanagerBody = 4 << 20
)

// tokensEnv names the environment variable holding API tokens,
// comma-separated.
const tokensEnv = "SWARMVLAN_API_TOKENS"

// scaleAPI is the scale webhook API: any manager accepts a request and
// records the decision in state/scale/<service> with check-and-set; the
// leader converges Docker to it.
type scaleAPI struct {
	store   *state.Store
	view    *reconcile.View
	log     *slog.Logger
	metrics *metrics
	// tokens are the SHA-256 digests of the accepted bearer tokens: the
	// comparison then runs over equal lengths and leaks nothing through
	// timing, not even a token's length.
	tokens [][sha256.Size]byte
	// serviceLabel and directionLabel are the alert labels that name the
	// service and the direction in Alertmanager webhooks.
	serviceLabel, directionLabel string
}

// handler routes the scale API. Every route needs a bearer token.
func (a *scaleAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/services/{name}/scale", a.authorize(cluster.ScaleSourceAPI, http.HandlerFunc(a.serveScale)))
	mux.Handle("GET /v1/services/{name}", a.authorize("", http.HandlerFunc(a.serveService)))
	// Orbiter's documented API, so webhooks and scripts written for
	// Orbiter keep their URLs and bodies (orbiter.go).
	mux.Handle("POST /v1/orbiter/handle/{autoscaler}/{service}", a.authorize(cluster.ScaleSourceOrbiter, http.HandlerFunc(a.serveOrbiterBody)))
	mux.Handle("POST /v1/orbiter/handle/{autoscaler}/{service}/{direction}", a.authorize(cluster.ScaleSourceOrbiter, http.HandlerFunc(a.serveOrbiter)))
	mux.Handle("GET /v1/orbiter/autoscaler", a.authorize("", http.HandlerFunc(a.serveOrbiterList)))
	mux.Handle("GET /v1/orbiter/health", a.authorize("", http.HandlerFunc(a.serveOrbiterHealth)))
	mux.Handle("POST /v1/alertmanager", a.authorize(cluster.ScaleSourceAlertmanager, http.HandlerFunc(a.serveAlertmanager)))
	return mux
}

// loadAPITokens reads bearer tokens from file (one per line, blank lines
// and # comments skipped; "" for none) and from env (comma-separated).
func loadAPITokens(file, env string) ([]string, error) {
	var tokens []string
	for _, t := range strings.Split(env, ",") {
		if t = strings.TrimSpace(t); t != "" {
			tokens = append(tokens, t)
		}
	}
	if file == "" {
		return tokens, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		tokens = append(tokens, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--token-file %s: read: %w", file, err)
	}
	return tokens, nil
}

func tokenDigests(tokens []string) [][sha256.Size]byte {
	out := make([][sha256.Size]byte, len(tokens))
	for i, t := range tokens {
		out[i] = sha256.Sum256([]byte(t))
	}
	return out
}

// authorize lets a request through only with a configured bearer token.
// Without any token configured, scaling is off: an open scale API is what
// Orbiter shipped and what this one must not be. A refusal counts as a
// scale request of source; the read routes pass "" and are not counted.
func (a *scaleAPI) authorize(source string, next http.Handler) http.Handler {
	count := func() {
		if source != "" {
			a.metrics.countScale(source, scaleResultUnauthorized)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(a.tokens) == 0 {
			count()
			w.Header().Set("WWW-Authenticate", `Bearer realm="swarmvlan"`)
			writeJSON(w, http.StatusUnauthorized, errorReply{Error: "no API token configured: scaling is disabled"})
			return
		}
		token, ok := bearerToken(r)
		if !ok {
			count()
			w.Header().Set("WWW-Authenticate", `Bearer realm="swarmvlan"`)
			writeJSON(w, http.StatusUnauthorized, errorReply{Error: "missing bearer token (Authorization: Bearer TOKEN)"})
			return
		}
		if !a.validToken(token) {
			count()
			a.log.Warn("scale request with an invalid token", "source", source, "remote", r.RemoteAddr, "path", r.URL.Path)
			w.Header().Set("WWW-Authenticate", `Bearer realm="swarmvlan", error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, errorReply{Error: "invalid bearer token"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// validToken compares against every configured token without stopping at
// a match, in constant time.
func (a *scaleAPI) validToken(token string) bool {
	sum := sha256.Sum256([]byte(token))
	match := 0
	for _, t := range a.tokens {
		match |= subtle.ConstantTimeCompare(sum[:], t[:])
	}
	return match == 1
}

// scaleBody is the body of POST /v1/services/{name}/scale.
type scaleBody struct {
	Direction string `json:"direction"`
	Replicas  *int   `json:"replicas"`
	// Reason is optional, recorded with the decision.
	Reason string `json:"reason"`
}

func (a *scaleAPI) serveScale(w http.ResponseWriter, r *http.Request) {
	const source = cluster.ScaleSourceAPI
	var body scaleBody
	if code, err := decodeJSONBody(w, r, &body, maxScaleBody, true); err != nil {
		a.metrics.countScale(source, scaleResultInvalid)
		writeJSON(w, code, errorReply{Error: err.Error()})
		return
	}
	a.respond(w, r, r.PathValue("name"), cluster.ScaleRequest{
		Direction: body.Direction, Replicas: body.Replicas, Source: source, Note: body.Reason,
	})
}

// serveOrbiter is Orbiter's POST /v1/orbiter/handle/{autoscaler}/{service}/{direction}.
// The autoscaler name is Orbiter's grouping; here it is only recorded.
func (a *scaleAPI) serveOrbiter(w http.ResponseWriter, r *http.Request) {
	autoscaler := r.PathValue("autoscaler")
	a.respond(w, r, r.PathValue("service"), cluster.ScaleRequest{
		Direction: r.PathValue("direction"),
		Source:    cluster.ScaleSourceOrbiter,
		Note:      "orbiter autoscaler " + autoscaler,
	})
}

// respond decides one request and writes the answer.
func (a *scaleAPI) respond(w http.ResponseWriter, r *http.Request, name string, req cluster.ScaleRequest) {
	res := a.decide(r.Context(), r.RemoteAddr, name, req)
	if res.refusal != nil && res.refusal.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(res.refusal.RetryAfter)))
	}
	writeJSON(w, res.code, res.reply())
}

// scaleResult is the outcome of one decided request.
type scaleResult struct {
	code    int
	result  string // the metrics result label
	out     cluster.ScaleOutcome
	refusal *cluster.ScaleRefusal
	err     string // 404 and 5xx: the message
}

// reply is the answer's body: the outcome, a refusal with the count that
// stays in force, or an error.
func (s scaleResult) reply() any {
	switch {
	case s.err != "":
		return errorReply{Error: s.err}
	case s.refusal != nil && s.refusal.Kind == cluster.RefusedInvalid:
		return errorReply{Error: s.refusal.Reason}
	case s.refusal != nil:
		rep := refusalReply{ScaleOutcome: s.out, Error: s.refusal.Reason}
		if s.refusal.Limit != "" {
			b := s.refusal.Bound
			rep.Limit, rep.Bound = s.refusal.Limit, &b
		}
		if s.refusal.RetryAfter > 0 {
			rep.RetryAfterSeconds = retryAfterSeconds(s.refusal.RetryAfter)
		}
		return rep
	}
	return s.out
}

// decide looks the service up in the documents in force and applies the
// request. It logs and counts the outcome.
func (a *scaleAPI) decide(ctx context.Context, remote, name string, req cluster.ScaleRequest) (res scaleResult) {
	defer func() {
		a.metrics.countScale(req.Source, res.result)
		attrs := []any{"service", name, "source", req.Source, "result", res.result, "code", res.code, "remote", remote}
		if req.Note != "" {
			attrs = append(attrs, "note", req.Note)
		}
		switch {
		case res.err != "":
			a.log.Warn("scale request", append(attrs, "err", res.err)...)
		case res.refusal != nil:
			a.log.Info("scale request refused", append(attrs, "reason", res.refusal.Reason)...)
		default:
			a.log.Info("scale request", append(attrs, "from", res.out.Previous, "to", res.out.Replicas)...)
		}
	}()
	select {
	case <-a.view.Synced():
	default:
		// The view is empty only because it was never read: "not found"
		// would be a lie.
		return scaleResult{code: http.StatusServiceUnavailable, result: scaleResultError, err: "spec view not yet read from Consul; retry shortly"}
	}
	doc, ok := a.view.Get(reconcile.Key{Kind: spec.KindService, Name: name})
	if !ok {
		return scaleResult{code: http.StatusNotFound, result: scaleResultNotFound, err: fmt.Sprintf("service %q not found", name)}
	}
	svc := doc.Object.(*spec.Service)
	out, refusal, err := cluster.ApplyScale(ctx, a.store, svc, req)
	if err != nil {
		return scaleResult{code: http.StatusServiceUnavailable, result: scaleResultError, err: err.Error()}
	}
	if refusal != nil {
		result := scaleResultRefused
		switch refusal.Kind {
		case cluster.RefusedWait:
			result = scaleResultCooldown
		case cluster.RefusedInvalid:
			result = scaleResultInvalid
		}
		return scaleResult{code: refusalStatus(refusal), result: result, out: out, refusal: refusal}
	}
	result := scaleResultScaled
	if !out.Changed() {
		result = scaleResultUnchanged
	}
	return scaleResult{code: http.StatusOK, result: result, out: out}
}

// errorReply is the body of every error answer.
type errorReply struct {
	Error string `json:"error"`
}

// refusalReply answers a refused request: the count stays where it was.
type refusalReply struct {
	cluster.ScaleOutcome
	Error string `json:"error"`
	// Limit ("min" or "max") and Bound name the bound that was hit.
	Limit             string `json:"limit,omitempty"`
	Bound             *int   `json:"bound,omitempty"`
	RetryAfterSeconds int    `json:"retryAfterSeconds,omitempty"`
}

// retryAfterSeconds rounds up: a client that waits the advertised time must
// not arrive a fraction of a second early and be refused again.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int((d+time.Second-1)/time.Second))
}

// alertmanagerPayload is the part of Alertmanager's webhook body (version 4)
// the receiver reads; other fields are accepted and ignored.
type alertmanagerPayload struct {
	Receiver string               `json:"receiver"`
	Status   string               `json:"status"`
	Alerts   *[]alertmanagerAlert `json:"alerts"`
}

type alertmanagerAlert struct {
	Status      string            `json:"status"`
	Labels      map[string]string `json:"labels"`
	Fingerprint string            `json:"fingerprint"`
}

// alertResult is the receiver's answer for one alert.
type alertResult struct {
	Alert       string `json:"alert,omitempty"` // the alertname label
	Fingerprint string `json:"fingerprint,omitempty"`
	Status      string `json:"status"`
	Service     string `json:"service,omitempty"`
	Direction   string `json:"direction,omitempty"`
	// Result is scaled, unchanged, refused, cooldown, invalid, not_found,
	// ignored or error; Code the HTTP status a single request would get.
	Result   string `json:"result"`
	Code     int    `json:"code,omitempty"`
	Message  string `json:"message,omitempty"`
	Replicas *int   `json:"replicas,omitempty"`
	Previous *int   `json:"previous,omitempty"`
}

// serveAlertmanager is an Alertmanager webhook receiver: every firing alert
// whose labels name a service and a direction is one scale request; resolved
// alerts are ignored (scaling back is a separate alert's job, with its own
// cooldown and stabilization).
//
// The answer is 200 whenever the body was understood, with a result per
// alert: Alertmanager retries a whole group on any other status, which
// would repeat the alerts that did scale. A firing alert is re-sent every
// repeat_interval anyway.
func (a *scaleAPI) serveAlertmanager(w http.ResponseWriter, r *http.Request) {
	const source = cluster.ScaleSourceAlertmanager
	var p alertmanagerPayload
	if code, err := decodeJSONBody(w, r, &p, maxAlertmanagerBody, false); err != nil {
		a.metrics.countScale(source, scaleResultInvalid)
		writeJSON(w, code, errorReply{Error: err.Error()})
		return
	}
	if p.Alerts == nil {
		a.metrics.countScale(source, scaleResultInvalid)
		writeJSON(w, http.StatusBadRequest, errorReply{Error: "alerts: required (an Alertmanager webhook payload)"})
		return
	}
	results := make([]alertResult, 0, len(*p.Alerts))
	for i, al := range *p.Alerts {
		results = append(results, a.handleAlert(r, i, al))
	}
	writeJSON(w, http.StatusOK, struct {
		Receiver string        `json:"receiver,omitempty"`
		Results  []alertResult `json:"results"`
	}{p.Receiver, results})
}

func (a *scaleAPI) handleAlert(r *http.Request, i int, al alertmanagerAlert) alertResult {
	const source = cluster.ScaleSourceAlertmanager
	res := alertResult{
		Alert:       al.Labels["alertname"],
		Fingerprint: al.Fingerprint,
		Status:      al.Status,
		Service:     al.Labels[a.serviceLabel],
		Direction:   al.Labels[a.directionLabel],
	}
	ignore := func(msg string) alertResult {
		a.metrics.countScale(source, scaleResultIgnored)
		res.Result, res.Message = scaleResultIgnored, msg
		return res
	}
	switch {
	case al.Status != "firing":
		return ignore(fmt.Sprintf("alerts[%d].status is %q: only firing alerts scale", i, al.Status))
	case res.Service == "":
		return ignore(fmt.Sprintf("alerts[%d].labels.%s: missing, so no service to scale", i, a.serviceLabel))
	case res.Direction == "":
		// An alert that names a service but no direction is a mistake in
		// the alerting rule: say so rather than ignore it.
		a.metrics.countScale(source, scaleResultInvalid)
		res.Result, res.Code = scaleResultInvalid, http.StatusBadRequest
		res.Message = fmt.Sprintf(`alerts[%d].labels.%s: missing (want "up" or "down")`, i, a.directionLabel)
		return res
	}
	note := "alert"
	if res.Alert != "" {
		note += " " + res.Alert
	}
	dec := a.decide(r.Context(), r.RemoteAddr, res.Service, cluster.ScaleRequest{Direction: res.Direction, Source: source, Note: note})
	res.Result, res.Code = dec.result, dec.code
	switch {
	case dec.err != "":
		res.Message = dec.err
	case dec.refusal != nil:
		res.Message = dec.refusal.Reason
		if dec.refusal.Kind == cluster.RefusedInvalid {
			res.Message = fmt.Sprintf("alerts[%d].labels.%s: %s", i, a.directionLabel, strings.TrimPrefix(dec.refusal.Reason, "direction: "))
		}
	default:
		res.Replicas, res.Previous = &dec.out.Replicas, &dec.out.Previous
	}
	return res
}

// decodeJSONBody reads one JSON object from the request into into. A
// failure comes back as the status to answer with and a message naming the
// field at fault.
func decodeJSONBody(w http.ResponseWriter, r *http.Request, into any, limit int64, strict bool) (int, error) {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(into); err != nil {
		return describeJSONError(err, limit)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return http.StatusBadRequest, errors.New("body: unexpected data after the JSON object")
	}
	return 0, nil
}

func describeJSONError(err error, limit int64) (int, error) {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, io.EOF):
		return http.StatusBadRequest, errors.New("body: empty, want a JSON object")
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, fmt.Errorf("body: larger than %d bytes", limit)
	case errors.As(err, &syntax):
		return http.StatusBadRequest, fmt.Errorf("body: invalid JSON at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return http.StatusBadRequest, fmt.Errorf("body: must be a JSON object, got %s", typ.Value)
		}
		return http.StatusBadRequest, fmt.Errorf("%s: must be %s, got %s", typ.Field, jsonTypeName(typ.Type), typ.Value)
	}
	if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return http.StatusBadRequest, fmt.Errorf("%s: unknown field", strings.Trim(field, `"`))
	}
	return http.StatusBadRequest, fmt.Errorf("body: %w", err)
}

func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return t.String()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// refusalStatus is the HTTP status a refused scale request is answered
// with: 400 for a malformed request, 409 when the service cannot be scaled
// that way, 429 inside a cooldown or the stabilization window.
func refusalStatus(r *cluster.ScaleRefusal) int {
	switch r.Kind {
	case cluster.RefusedInvalid:
		return http.StatusBadRequest
	case cluster.RefusedWait:
		return http.StatusTooManyRequests
	}
	return http.StatusConflict
}
