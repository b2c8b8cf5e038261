package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// TestServe runs the server on a free loopback port and checks what a
// healthcheck and a test client see.
func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	host, _ := os.Hostname()

	tests := []struct {
		path       string
		wantStatus int
		wantBody   string
	}{
		{"/health", http.StatusOK, "ok\n"},
		{"/", http.StatusOK, "hostname " + host + "\n"},
		{"/nope", http.StatusNotFound, "404 page not found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get(base + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if !strings.HasPrefix(string(body), tt.wantBody) {
				t.Errorf("body %q, want prefix %q", body, tt.wantBody)
			}
		})
	}

	t.Run("probe", func(t *testing.T) {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		if err := probe(":"+port, time.Second); err != nil {
			t.Errorf("probe of a serving port: %v", err)
		}
	})
}

// TestProbeFailsWithoutServer checks the healthcheck reports a dead server.
func TestProbeFailsWithoutServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	if err := probe(":"+port, time.Second); err == nil {
		t.Error("probe of a closed port succeeded")
	}
	if err := probe("no-port", time.Second); err == nil {
		t.Error("probe of a malformed listen address succeeded")
	}
}

// TestFetch checks the one-shot GET used for reachability checks: the body
// of a 200 is printed, anything else is an error.
func TestFetch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "broken", http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "address 172.80.3.7\n")
	}))
	t.Cleanup(srv.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/"
	ln.Close()

	tests := []struct {
		name     string
		url      string
		wantErr  bool
		wantBody string
	}{
		{"ok", srv.URL + "/", false, "address 172.80.3.7\n"},
		{"server error", srv.URL + "/fail", true, ""},
		{"nothing listening", closed, true, ""},
		{"bad url", "http://[::1", true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := fetch(&out, tt.url, 2*time.Second)
			if (err != nil) != tt.wantErr {
				t.Fatalf("fetch(%s) error = %v, want error %v", tt.url, err, tt.wantErr)
			}
			if out.String() != tt.wantBody {
				t.Errorf("fetch(%s) printed %q, want %q", tt.url, out.String(), tt.wantBody)
			}
		})
	}
}
