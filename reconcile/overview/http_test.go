package overview

import (
	"bufio"
	"crypto/sha256"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestAccessFor(t *testing.T) {
	ui := [][sha256.Size]byte{sha256.Sum256([]byte("u"))}
	api := [][sha256.Size]byte{sha256.Sum256([]byte("a"))}
	for _, c := range []struct {
		addr     string
		ui, api  [][sha256.Size]byte
		open     bool
		tokens   int
		tokenSum [sha256.Size]byte
	}{
		{"127.0.0.1:8480", nil, api, true, 0, [32]byte{}},
		{"[::1]:8480", nil, nil, true, 0, [32]byte{}},
		{"127.0.0.1:8480", ui, api, false, 1, ui[0]},
		{"10.0.0.2:8480", nil, api, false, 1, api[0]},
		{"[::]:8480", ui, api, false, 1, ui[0]},
		{"10.0.0.2:8480", nil, nil, false, 0, [32]byte{}},
	} {
		a := AccessFor(c.addr, c.ui, c.api, false)
		if a.Open != c.open || len(a.Tokens) != c.tokens || (c.tokens == 1 && a.Tokens[0] != c.tokenSum) {
			t.Errorf("AccessFor(%s, %d ui, %d api) = open %v, %d tokens", c.addr, len(c.ui), len(c.api), a.Open, len(a.Tokens))
		}
	}
}

func TestLogin(t *testing.T) {
	s := testStore(t)
	src := NewSource(s, "m1", nil)
	src.SetTree(s.Tree(testPairs(t, s)))
	h := NewHandler(src, Access{Tokens: [][sha256.Size]byte{sha256.Sum256([]byte("sesame"))}})
	mux := http.NewServeMux()
	h.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	get := func(c *http.Client, path string, hdr ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if len(hdr) == 2 {
			req.Header.Set(hdr[0], hdr[1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			line, _ := bufio.NewReader(resp.Body).ReadString('\n')
			return resp.StatusCode, line
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	anon := srv.Client()
	for _, p := range []string{"/", "/v1/events", "/v1/overview", "/ui/app.js"} {
		if code, body := get(anon, p); code != http.StatusUnauthorized {
			t.Errorf("GET %s without login: %d %.80q", p, code, body)
		}
	}
	if code, body := get(anon, "/"); !strings.Contains(body, `action="/ui/login"`) {
		t.Errorf("GET / without login: %d, no login form: %.200q", code, body)
	}
	if code, _ := get(anon, "/v1/overview", "Authorization", "Bearer sesame"); code != http.StatusOK {
		t.Errorf("GET /v1/overview with the bearer token: %d", code)
	}
	if code, _ := get(anon, "/v1/overview", "Authorization", "Bearer wrong"); code != http.StatusUnauthorized {
		t.Errorf("GET /v1/overview with a wrong token: %d", code)
	}

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := browser.PostForm(srv.URL+"/ui/login", url.Values{"token": {"wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("login with a wrong token: %d", resp.StatusCode)
	}
	resp, err = browser.PostForm(srv.URL+"/ui/login", url.Values{"token": {"sesame"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" {
		t.Errorf("login: %d at %s", resp.StatusCode, resp.Request.URL)
	}
	if code, body := get(browser, "/"); code != http.StatusOK || !strings.Contains(body, "/ui/app.js") {
		t.Errorf("GET / after login: %d %.80q", code, body)
	}
	if code, line := get(browser, "/v1/events"); code != http.StatusOK || line != "event: overview\n" {
		t.Errorf("GET /v1/events after login: %d %q", code, line)
	}
	if code, _ := get(browser, "/ui/app.js"); code != http.StatusOK {
		t.Errorf("GET /ui/app.js after login: %d", code)
	}
	for _, c := range jar.Cookies(mustURL(t, srv.URL)) {
		if strings.Contains(c.Value, "sesame") {
			t.Errorf("cookie carries the token: %v", c)
		}
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestEventsFollowChanges reads the event stream: the current snapshot
// first, then one per change, while the stream stays open.
func TestEventsFollowChanges(t *testing.T) {
	s := testStore(t)
	src := NewSource(s, "m1", nil)
	pairs := testPairs(t, s)
	src.SetTree(s.Tree(pairs))
	mux := http.NewServeMux()
	NewHandler(src, Access{Open: true}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	next := func() string {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				return data
			}
		}
	}
	if first := next(); !strings.Contains(first, `"leader":"m1"`) {
		t.Fatalf("first event: %.200s", first)
	}
	for _, p := range pairs {
		if p.Key == s.LeaderKey() {
			p.Value = []byte("m7")
		}
	}
	src.SetTree(s.Tree(pairs))
	if second := next(); !strings.Contains(second, `"leader":"m7"`) {
		t.Fatalf("second event: %.200s", second)
	}
	if n := src.Subscribers(); n != 1 {
		t.Errorf("%d subscribers", n)
	}
}
