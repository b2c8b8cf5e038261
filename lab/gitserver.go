package lab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// GitHTTPBackend is Debian's git smart-HTTP server (package git).
const GitHTTPBackend = "/usr/lib/git-core/git-http-backend"

// GitServerOptions shape StartGitServer.
type GitServerOptions struct {
	// Addr is the listen address; default 127.0.0.1:0.
	Addr string
	// Username and Password, when set, are required (HTTP basic auth).
	Username, Password string
	// TLS serves HTTPS with a certificate of its own (GitServer.CAFile).
	TLS bool
}

// GitServer is a real git server for a test: a bare repository served by
// git-http-backend behind net/http/cgi, and a working clone the test
// commits in and pushes from with the git binary.
type GitServer struct {
	// URL is the repository's clone URL (no credentials).
	URL string
	// Bare is the served repository's directory.
	Bare string
	// CAFile is the PEM certificate clients must trust (with TLS).
	CAFile string

	work string
	srv  *http.Server
	down atomic.Bool
	// Fetches counts upload-pack requests (ref listings and fetches).
	Fetches atomic.Int64
	mu      sync.Mutex
}

// StartGitServer starts the server with an empty repository whose HEAD is
// main; it stops when the test ends.
func StartGitServer(t testing.TB, opts GitServerOptions) *GitServer {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("git server: no git binary (scripts/ensure-docker.sh installs Debian's git): %v", err)
	}
	if _, err := os.Stat(GitHTTPBackend); err != nil {
		t.Fatalf("git server: %v (Debian's git package has it)", err)
	}
	dir := t.TempDir()
	g := &GitServer{Bare: filepath.Join(dir, "srv", "docs.git"), work: filepath.Join(dir, "work")}
	g.git(t, "", "init", "-q", "--bare", "-b", "main", g.Bare)
	g.git(t, "", "init", "-q", "-b", "main", g.work)
	g.git(t, g.work, "remote", "add", "origin", g.Bare)
	backend := &cgi.Handler{
		Path: GitHTTPBackend,
		Root: "/",
		Env:  []string{"GIT_PROJECT_ROOT=" + filepath.Dir(g.Bare), "GIT_HTTP_EXPORT_ALL=1"},
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.down.Load() {
			http.Error(w, "git server down for the test", http.StatusServiceUnavailable)
			return
		}
		if opts.Username != "" {
			u, p, ok := r.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u+":"+p), []byte(opts.Username+":"+opts.Password)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
		}
		if strings.Contains(r.URL.RawQuery, "git-upload-pack") || strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
			g.Fetches.Add(1)
		}
		backend.ServeHTTP(w, r)
	})
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("git server: listen %s: %v", addr, err)
	}
	g.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	scheme := "http"
	if opts.TLS {
		cert, pemCert, err := selfSigned(ln.Addr().(*net.TCPAddr).IP)
		if err != nil {
			t.Fatalf("git server: certificate: %v", err)
		}
		g.CAFile = filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(g.CAFile, pemCert, 0o644); err != nil {
			t.Fatal(err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	go g.srv.Serve(ln)
	t.Cleanup(func() { g.srv.Close() })
	g.URL = scheme + "://" + ln.Addr().String() + "/docs.git"
	return g
}

// selfSigned makes a certificate for ip, valid for a day.
func selfSigned(ip net.IP) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "swarmvlan test git server"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{ip},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// SetDown makes the server answer 503 to everything (true) or serve again.
func (g *GitServer) SetDown(down bool) { g.down.Store(down) }

// Commit makes the working tree hold exactly files (path → content), commits
// them with msg and pushes to the served repository; it returns the commit.
func (g *GitServer) Commit(t testing.TB, files map[string]string, msg string) string {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writeTree(t, files)
	g.git(t, g.work, "commit", "-q", "--allow-empty", "-m", msg)
	g.git(t, g.work, "push", "-q", "origin", "HEAD:refs/heads/main")
	return g.head(t)
}

// ForcePush replaces the last commit of main with one holding files: the
// old head is no longer on the branch (history rewritten).
func (g *GitServer) ForcePush(t testing.TB, files map[string]string, msg string) string {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.writeTree(t, files)
	g.git(t, g.work, "commit", "-q", "--amend", "--allow-empty", "-m", msg)
	g.git(t, g.work, "push", "-q", "--force", "origin", "HEAD:refs/heads/main")
	return g.head(t)
}

// PushBranch commits files on another branch and pushes it, leaving main
// as it is.
func (g *GitServer) PushBranch(t testing.TB, branch string, files map[string]string, msg string) string {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.git(t, g.work, "checkout", "-q", "-B", branch)
	g.writeTree(t, files)
	g.git(t, g.work, "commit", "-q", "--allow-empty", "-m", msg)
	g.git(t, g.work, "push", "-q", "--force", "origin", "HEAD:refs/heads/"+branch)
	hash := g.head(t)
	g.git(t, g.work, "checkout", "-q", "-f", "main")
	return hash
}

func (g *GitServer) writeTree(t testing.TB, files map[string]string) {
	t.Helper()
	entries, err := os.ReadDir(g.work)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != ".git" {
			if err := os.RemoveAll(filepath.Join(g.work, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		full := filepath.Join(g.work, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(files[p]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	g.git(t, g.work, "add", "-A")
}

func (g *GitServer) head(t testing.TB) string {
	t.Helper()
	return strings.TrimSpace(g.git(t, g.work, "rev-parse", "HEAD"))
}

func (g *GitServer) git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", append([]string{"-c", "user.name=Test Author", "-c", "user.email=author@example.test", "-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+filepath.Dir(g.work))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// String names the server for logs.
func (g *GitServer) String() string { return fmt.Sprintf("git server %s", g.URL) }
