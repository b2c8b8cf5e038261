package gitsync

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

const hookSecret = "s3cret-hook"

func sign(body []byte, secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

func pushBody(ref string) []byte {
	return []byte(`{"ref":"` + ref + `","before":"0000","after":"abc123","repository":{"full_name":"ops/docs"}}`)
}

func TestVerifyPush(t *testing.T) {
	body := pushBody("refs/heads/main")
	cases := []struct {
		name    string
		headers map[string]string
		body    []byte
		want    error // nil: verified
		anyErr  bool  // some other error (a 400)
		prov    string
	}{
		{"github", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(body, hookSecret)}, body, nil, false, "github"},
		{"github wrong secret", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(body, "other")}, body, ErrBadSignature, false, "github"},
		{"github body changed", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(body, hookSecret)}, pushBody("refs/heads/evil"), ErrBadSignature, false, "github"},
		{"github not hex", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=zz"}, body, ErrBadSignature, false, "github"},
		{"github unsigned", map[string]string{"X-GitHub-Event": "push"}, body, ErrUnsigned, false, "github"},
		{"gitea", map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": sign(body, hookSecret)}, body, nil, false, "gitea"},
		{"forgejo", map[string]string{"X-Forgejo-Event": "push", "X-Forgejo-Signature": sign(body, hookSecret)}, body, nil, false, "gitea"},
		{"gitea hub header", map[string]string{"X-Gitea-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(body, hookSecret)}, body, nil, false, "gitea"},
		{"gitea bad", map[string]string{"X-Gitea-Event": "push", "X-Gitea-Signature": sign(body, "x")}, body, ErrBadSignature, false, "gitea"},
		{"gitlab", map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": hookSecret}, body, nil, false, "gitlab"},
		{"gitlab bad token", map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "guess"}, body, ErrBadSignature, false, "gitlab"},
		{"gitlab no token", map[string]string{"X-Gitlab-Event": "Push Hook"}, body, ErrUnsigned, false, "gitlab"},
		{"signed but not JSON", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign([]byte("{nope"), hookSecret)}, []byte("{nope"), nil, true, "github"},
		{"signed but no ref", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign([]byte(`{"zen":1}`), hookSecret)}, []byte(`{"zen":1}`), nil, true, "github"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range c.headers {
				h.Set(k, v)
			}
			p, err := VerifyPush(h, c.body, []byte(hookSecret))
			switch {
			case c.anyErr:
				if err == nil || errors.Is(err, ErrBadSignature) || errors.Is(err, ErrUnsigned) {
					t.Fatalf("want a payload error, got %v", err)
				}
			case c.want != nil:
				if !errors.Is(err, c.want) {
					t.Fatalf("want %v, got %v", c.want, err)
				}
			case err != nil:
				t.Fatal(err)
			default:
				if p.Ref != "refs/heads/main" || p.Commit != "abc123" || p.Provider != c.prov {
					t.Fatalf("push: %+v", p)
				}
			}
			if err != nil && strings.Contains(err.Error(), hookSecret) {
				t.Fatalf("error shows the secret: %v", err)
			}
		})
	}
}

// TestWebhookHandler drives the handler over real HTTP: only a signed push
// of the synced branch triggers; everything else is refused with its code.
func TestWebhookHandler(t *testing.T) {
	var mu sync.Mutex
	var triggered []Push
	var logs bytes.Buffer
	wh := &Webhook{
		Secret: []byte(hookSecret),
		Branch: func() string { return "main" },
		Trigger: func(ctx context.Context, p Push) error {
			mu.Lock()
			defer mu.Unlock()
			triggered = append(triggered, p)
			return nil
		},
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	}
	srv := httptest.NewServer(wh)
	defer srv.Close()
	post := func(headers map[string]string, body io.Reader, length int64) (int, string) {
		req, err := http.NewRequest("POST", srv.URL, body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = length
		req.Header.Set("Content-Type", "application/json")
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	signed := func(body []byte) map[string]string {
		return map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(body, hookSecret)}
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(triggered)
	}

	bad := pushBody("refs/heads/main")
	if code, _ := post(map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + sign(bad, "wrong")}, bytes.NewReader(bad), int64(len(bad))); code != http.StatusUnauthorized {
		t.Fatalf("bad signature: %d", code)
	}
	if !strings.Contains(logs.String(), "git webhook refused") || strings.Contains(logs.String(), hookSecret) {
		t.Fatalf("refusal log: %s", logs.String())
	}
	// 10 MB, with its length announced and, separately, streamed without.
	huge := bytes.Repeat([]byte("x"), 10<<20)
	if code, _ := post(signed(huge), bytes.NewReader(huge), int64(len(huge))); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("10 MB payload: %d", code)
	}
	if code, _ := post(signed(huge), io.MultiReader(bytes.NewReader(huge)), -1); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("10 MB chunked payload: %d", code)
	}
	malformed := []byte(`{"ref": "refs/heads/main", `)
	if code, _ := post(signed(malformed), bytes.NewReader(malformed), int64(len(malformed))); code != http.StatusBadRequest {
		t.Fatalf("malformed JSON: %d", code)
	}
	other := pushBody("refs/heads/feature")
	if code, body := post(signed(other), bytes.NewReader(other), int64(len(other))); code != http.StatusOK || !strings.Contains(body, "ignored") {
		t.Fatalf("other branch: %d %s", code, body)
	}
	tag := pushBody("refs/tags/v1")
	if code, _ := post(signed(tag), bytes.NewReader(tag), int64(len(tag))); code != http.StatusOK {
		t.Fatalf("tag: %d", code)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d triggers from refused or ignored requests", n)
	}
	good := pushBody("refs/heads/main")
	if code, _ := post(signed(good), bytes.NewReader(good), int64(len(good))); code != http.StatusAccepted {
		t.Fatalf("good push: %d", code)
	}
	gl := map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": hookSecret}
	if code, _ := post(gl, bytes.NewReader(good), int64(len(good))); code != http.StatusAccepted {
		t.Fatalf("gitlab push: %d", code)
	}
	if n := count(); n != 2 {
		t.Fatalf("%d triggers, want 2", n)
	}
}
