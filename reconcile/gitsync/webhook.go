package gitsync

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// MaxWebhookBody is the largest push payload taken (GitHub caps its own
// at 25 MB, but a push of a documents repository is a few kB; anything
// this large is refused with 413 before its signature is even checked).
const MaxWebhookBody = 1 << 20

// Push is a verified push notification.
type Push struct {
	// Provider is github, gitea or gitlab.
	Provider string
	// Event is the provider's event name (push, Push Hook, ping).
	Event string
	// Ref is the pushed ref (refs/heads/main), Commit its new head.
	Ref    string
	Commit string
}

// Webhook errors, each with its HTTP status.
var (
	ErrUnsigned     = errors.New("no signature or token header (X-Hub-Signature-256, X-Gitea-Signature, X-Gitlab-Token)")
	ErrBadSignature = errors.New("signature or token does not match the secret")
)

// VerifyPush checks a webhook request's signature against secret and
// decodes its payload. GitHub and Gitea/Forgejo sign the body with
// HMAC-SHA256 (X-Hub-Signature-256: sha256=<hex>, X-Gitea-Signature or
// X-Forgejo-Signature: <hex>); GitLab sends the secret itself
// (X-Gitlab-Token). A signature that does not match is ErrBadSignature
// (or ErrUnsigned); a verified body that is not a push payload is another
// error (a 400).
func VerifyPush(h http.Header, body, secret []byte) (Push, error) {
	var p Push
	switch {
	case h.Get("X-Gitlab-Event") != "" || h.Get("X-Gitlab-Token") != "":
		p.Provider, p.Event = "gitlab", h.Get("X-Gitlab-Event")
		tok := h.Get("X-Gitlab-Token")
		if tok == "" {
			return p, ErrUnsigned
		}
		if subtle.ConstantTimeCompare([]byte(tok), secret) != 1 {
			return p, ErrBadSignature
		}
	default:
		p.Provider, p.Event = "github", h.Get("X-GitHub-Event")
		if ev := firstHeader(h, "X-Gitea-Event", "X-Forgejo-Event", "X-Gogs-Event"); ev != "" {
			p.Provider, p.Event = "gitea", ev
		}
		sig := ""
		if s, ok := strings.CutPrefix(h.Get("X-Hub-Signature-256"), "sha256="); ok {
			sig = s
		} else {
			sig = firstHeader(h, "X-Gitea-Signature", "X-Forgejo-Signature", "X-Gogs-Signature")
		}
		if sig == "" {
			return p, ErrUnsigned
		}
		got, err := hex.DecodeString(sig)
		if err != nil {
			return p, ErrBadSignature
		}
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		if !hmac.Equal(got, mac.Sum(nil)) {
			return p, ErrBadSignature
		}
	}
	if p.Event == "ping" {
		return p, nil
	}
	var payload struct {
		Ref         string `json:"ref"`
		After       string `json:"after"`
		CheckoutSHA string `json:"checkout_sha"`
	}
	if err := json.Unmarshal(body, &payload); err != nil {
		return p, fmt.Errorf("payload: not JSON (set the hook's content type to application/json): %w", err)
	}
	if payload.Ref == "" {
		return p, errors.New("payload: no ref: not a push event")
	}
	p.Ref, p.Commit = payload.Ref, payload.After
	if p.Commit == "" {
		p.Commit = payload.CheckoutSHA
	}
	return p, nil
}

func firstHeader(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}

// Webhook serves POST /v1/git/webhook.
type Webhook struct {
	Secret []byte
	// Branch is the branch synced ("" while unknown: every branch push
	// triggers).
	Branch func() string
	// Trigger passes a push of the branch on to the leader's syncer.
	Trigger func(ctx context.Context, p Push) error
	Log     *slog.Logger
	// Observe, if set, is told each request's outcome (accepted, ignored,
	// unauthorized, too_large, invalid, error).
	Observe func(result string)
}

// ServeHTTP verifies the request and triggers a sync: 202 when triggered,
// 200 when ignored (another branch, a tag, a ping), 401 for a bad or
// missing signature, 413 for a body over MaxWebhookBody, 400 for a body
// that is not a push payload.
func (wh *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	observe := func(result string) {
		if wh.Observe != nil {
			wh.Observe(result)
		}
	}
	if r.ContentLength > MaxWebhookBody {
		observe("too_large")
		http.Error(w, fmt.Sprintf("payload of %d bytes: at most %d", r.ContentLength, MaxWebhookBody), http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWebhookBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			observe("too_large")
			http.Error(w, fmt.Sprintf("payload over %d bytes", MaxWebhookBody), http.StatusRequestEntityTooLarge)
			return
		}
		observe("invalid")
		http.Error(w, "read payload: "+err.Error(), http.StatusBadRequest)
		return
	}
	p, err := VerifyPush(r.Header, body, wh.Secret)
	switch {
	case errors.Is(err, ErrUnsigned) || errors.Is(err, ErrBadSignature):
		observe("unauthorized")
		wh.Log.Warn("git webhook refused", "provider", p.Provider, "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	case err != nil:
		observe("invalid")
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if p.Event == "ping" {
		observe("ignored")
		fmt.Fprintln(w, "pong")
		return
	}
	want := ""
	if wh.Branch != nil {
		want = wh.Branch()
	}
	branch, isBranch := strings.CutPrefix(p.Ref, "refs/heads/")
	if !isBranch || want != "" && branch != want {
		observe("ignored")
		fmt.Fprintf(w, "ignored: push to %s (syncing branch %q)\n", p.Ref, want)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	if err := wh.Trigger(ctx, p); err != nil {
		observe("error")
		wh.Log.Warn("git webhook: pass the trigger on", "err", err)
		http.Error(w, "could not pass the trigger on: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	observe("accepted")
	wh.Log.Info("git webhook: sync triggered", "provider", p.Provider, "ref", p.Ref, "commit", p.Commit)
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, "sync triggered for %s\n", p.Commit)
}
