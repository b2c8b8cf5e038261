package overview

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"fmt"
	"html"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"time"
)

//go:embed web
var webFS embed.FS

// CookieName is the dashboard's login cookie.
const CookieName = "swarmvlan_ui"

// keepAlive is how often an idle event stream gets a comment line, so
// proxies and browsers keep it open.
const keepAlive = 20 * time.Second

// syncWait bounds how long GET /v1/overview waits for an idle dashboard's
// first listing of KV; past it, the unsynced snapshot says so.
const syncWait = 5 * time.Second

// Access says who may view the dashboard.
type Access struct {
	// Open lets anyone view without logging in (a loopback listener with
	// no dashboard token).
	Open bool
	// Tokens are the SHA-256 digests of the tokens that log in.
	Tokens [][sha256.Size]byte
	// Secure marks the cookie Secure (HTTPS listeners).
	Secure bool
}

// AccessFor is the default access of a listener on addr: open on a
// loopback address unless uiTokens are given; elsewhere, uiTokens or else
// apiTokens log in, and with neither the dashboard is off (closed, with a
// page that says so).
func AccessFor(addr string, uiTokens, apiTokens [][sha256.Size]byte, secure bool) Access {
	a := Access{Tokens: uiTokens, Secure: secure}
	if len(uiTokens) == 0 {
		a.Open = IsLoopback(addr)
		if !a.Open {
			a.Tokens = apiTokens
		}
	}
	return a
}

// IsLoopback reports whether a listen address (host:port) is on loopback
// only. An empty host (":8480") listens everywhere.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Handler serves the dashboard: GET / (the page), GET /ui/ (its assets),
// GET /v1/overview (the snapshot), GET /v1/events (the snapshots as
// Server-Sent Events), POST /ui/login and POST /ui/logout. Nothing it
// serves changes anything but the login cookie.
type Handler struct {
	src    *Source
	access Access
	// session is the cookie's value: random per process, so a restart
	// logs everyone out and nothing of a token is in the browser.
	session string
	static  http.Handler
}

// NewHandler returns the dashboard's handler over src.
func NewHandler(src *Source, access Access) *Handler {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	sub, err := fs.Sub(webFS, "web")
	if err != nil {
		panic(err)
	}
	return &Handler{src: src, access: access, session: hex.EncodeToString(b), static: http.StripPrefix("/ui/", http.FileServerFS(sub))}
}

// Register adds the dashboard's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", h.page)
	mux.HandleFunc("GET /ui/", h.asset)
	mux.HandleFunc("POST /ui/login", h.login)
	mux.HandleFunc("POST /ui/logout", h.logout)
	mux.HandleFunc("GET /v1/overview", h.overview)
	mux.HandleFunc("GET /v1/events", h.events)
}

// allowed says whether r may view: open access, the login cookie, or a
// bearer token (for scripts reading the JSON).
func (h *Handler) allowed(r *http.Request) bool {
	if h.access.Open {
		return true
	}
	if c, err := r.Cookie(CookieName); err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(h.session)) == 1 {
		return true
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return h.tokenOK(strings.TrimSpace(tok))
	}
	return false
}

func (h *Handler) tokenOK(token string) bool {
	if token == "" {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	match := 0
	for _, t := range h.access.Tokens {
		match |= subtle.ConstantTimeCompare(sum[:], t[:])
	}
	return match == 1
}

func noCache(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}

func (h *Handler) page(w http.ResponseWriter, r *http.Request) {
	noCache(w)
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	if !h.allowed(r) {
		h.loginPage(w, "")
		return
	}
	b, err := webFS.ReadFile("web/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(b)
}

// loginPage answers 401 with a form that posts the token; with no token
// configured it says how to turn the dashboard on.
func (h *Handler) loginPage(w http.ResponseWriter, problem string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	body := `<form method="post" action="/ui/login"><label>Token <input type="password" name="token" autocomplete="current-password" autofocus></label> <button type="submit">Log in</button></form>`
	if len(h.access.Tokens) == 0 {
		body = `<p>The dashboard is off on this listener: it listens beyond loopback and no token is set. Start the manager with <code>--ui-token</code> (or scale API tokens), or listen on 127.0.0.1.</p>`
	}
	if problem != "" {
		body = `<p class="err">` + html.EscapeString(problem) + `</p>` + body
	}
	fmt.Fprintf(w, `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>swarmvlan: log in</title><link rel="stylesheet" href="/ui/style.css"></head><body class="login"><main><h1>swarmvlan</h1>%s</main></body></html>`, body)
}

func (h *Handler) asset(w http.ResponseWriter, r *http.Request) {
	noCache(w)
	// The stylesheet is public so the login page is styled; the rest
	// needs a login.
	if r.URL.Path != "/ui/style.css" && !h.allowed(r) {
		http.Error(w, "log in first", http.StatusUnauthorized)
		return
	}
	h.static.ServeHTTP(w, r)
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	noCache(w)
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	if h.access.Open {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if !h.tokenOK(r.PostForm.Get("token")) {
		h.loginPage(w, "That token is not accepted.")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: h.session, Path: "/", HttpOnly: true,
		Secure: h.access.Secure, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: h.access.Secure, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	noCache(w)
	if !h.allowed(r) {
		http.Error(w, "log in at / or send a bearer token", http.StatusUnauthorized)
		return
	}
	// An idle dashboard starts its watches now: the answer waits for
	// their first listing, a few milliseconds.
	h.src.WaitSynced(r.Context(), syncWait)
	b, _ := h.src.Snapshot()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// events streams every new snapshot as an "overview" event, starting with
// the current one. A slow reader skips snapshots, never queues them.
func (h *Handler) events(w http.ResponseWriter, r *http.Request) {
	noCache(w)
	if !h.allowed(r) {
		http.Error(w, "log in at / first", http.StatusUnauthorized)
		return
	}
	rc := http.NewResponseController(w)
	notify, stop := h.src.Subscribe()
	defer stop()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var sent uint64
	send := func() error {
		b, v := h.src.Snapshot()
		if v == sent {
			return nil
		}
		sent = v
		if _, err := fmt.Fprintf(w, "event: overview\nid: %d\ndata: %s\n\n", v, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if send() != nil {
		return
	}
	t := time.NewTicker(keepAlive)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.src.done:
			return
		case <-notify:
			if send() != nil {
				return
			}
		case <-t.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}
