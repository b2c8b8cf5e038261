package gitsync

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"swarmvlan/lab"
)

// TestBasicAuth fetches over HTTPS from a git server that wants a
// password, read from a file; without it the fetch fails, and no error
// shows the password. The server's certificate is trusted through
// --git-ca-file only.
func TestBasicAuth(t *testing.T) {
	const password = "hunter2-very-secret"
	g := lab.StartGitServer(t, lab.GitServerOptions{Username: "sync", Password: password, TLS: true})
	if !strings.HasPrefix(g.URL, "https://") {
		t.Fatalf("not an https server: %s", g.URL)
	}
	hash := g.Commit(t, map[string]string{"vlan.yaml": vlanDoc("vlan40")}, "docs")
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	fetch := func(rawURL string, c Credentials) (Commit, error) {
		if c.CAFile == "" {
			c.CAFile = g.CAFile
		}
		src, err := NewSource(rawURL, "", "", c)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(src.URL, password) {
			t.Fatalf("source URL keeps the password: %s", src.URL)
		}
		repo, err := Open(src)
		if err != nil {
			t.Fatal(err)
		}
		return repo.Fetch(ctx)
	}
	if c, err := fetch(g.URL, Credentials{Username: "sync", PasswordFile: pwFile}); err != nil || c.Hash != hash {
		t.Fatalf("with the password file: %v %v", c, err)
	}
	if c, err := fetch(g.URL, Credentials{Username: "sync", TokenFile: pwFile}); err != nil || c.Hash != hash {
		t.Fatalf("with the token file: %v %v", c, err)
	}
	withCreds := strings.Replace(g.URL, "https://", "https://sync:"+password+"@", 1)
	if c, err := fetch(withCreds, Credentials{}); err != nil || c.Hash != hash {
		t.Fatalf("with credentials in the URL: %v %v", c, err)
	}
	_, err := fetch(g.URL, Credentials{})
	if err == nil || !strings.Contains(err.Error(), "authentication required") {
		t.Fatalf("without credentials: %v", err)
	}
	// Without the CA the certificate is refused.
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, nil, 0o644)
	if _, err := fetch(g.URL, Credentials{Username: "sync", PasswordFile: pwFile, CAFile: empty}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate: %v", err)
	}
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("nope"), 0o600)
	if _, err := fetch(withCreds, Credentials{PasswordFile: wrong}); err == nil || strings.Contains(err.Error(), password) || strings.Contains(err.Error(), "nope") {
		t.Fatalf("wrong password: %v", err)
	}
}

// sshGitServer serves git-upload-pack over a real SSH server (the git
// binary behind gliderlabs/ssh) to clients holding clientKey.
func sshGitServer(t *testing.T, clientKey gossh.PublicKey) (addr string, hostKey gossh.PublicKey) {
	t.Helper()
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	srv := &gliderssh.Server{
		Handler: func(s gliderssh.Session) {
			args := s.Command()
			if len(args) != 2 || args[0] != "git-upload-pack" {
				s.Exit(1)
				return
			}
			cmd := exec.Command("git-upload-pack", strings.Trim(args[1], "'"))
			cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s.Stderr()
			if err := cmd.Run(); err != nil {
				s.Exit(1)
				return
			}
			s.Exit(0)
		},
		PublicKeyHandler: func(ctx gliderssh.Context, key gliderssh.PublicKey) bool {
			return gliderssh.KeysEqual(key, clientKey)
		},
	}
	srv.AddHostKey(signer)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), signer.PublicKey()
}

func TestSSHKeyAndKnownHosts(t *testing.T) {
	g := lab.StartGitServer(t, lab.GitServerOptions{})
	hash := g.Commit(t, map[string]string{"vlan.yaml": vlanDoc("vlan40")}, "docs")

	clientPub, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := gossh.NewPublicKey(clientPub)
	if err != nil {
		t.Fatal(err)
	}
	addr, hostKey := sshGitServer(t, sshPub)
	dir := t.TempDir()
	block, err := gossh.MarshalPrivateKey(clientPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	writeKnown := func(name string, key gossh.PublicKey) string {
		p := filepath.Join(dir, name)
		line := knownhosts.Line([]string{knownhosts.Normalize(addr)}, key)
		if err := os.WriteFile(p, []byte(line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := gossh.NewSignerFromKey(otherPriv)
	good := writeKnown("known_hosts", hostKey)
	impostor := writeKnown("known_hosts.other", otherSigner.PublicKey())
	unknown := filepath.Join(dir, "known_hosts.empty")
	os.WriteFile(unknown, []byte("[example.test]:22 "+strings.TrimSpace(string(gossh.MarshalAuthorizedKey(hostKey)))+"\n"), 0o644)

	url := "ssh://git@" + addr + g.Bare
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fetch := func(known string) (Commit, error) {
		src, err := NewSource(url, "main", "", Credentials{SSHKeyFile: keyFile, KnownHostsFile: known})
		if err != nil {
			t.Fatal(err)
		}
		repo, err := Open(src)
		if err != nil {
			t.Fatal(err)
		}
		c, err := repo.Fetch(ctx)
		if err == nil {
			files, _, ferr := repo.Files(c.Hash)
			if ferr != nil || len(files) != 1 {
				t.Fatalf("files over ssh: %v %v", files, ferr)
			}
		}
		return c, err
	}
	if c, err := fetch(good); err != nil || c.Hash != hash {
		t.Fatalf("with the right known_hosts: %v %v", c, err)
	}
	for name, known := range map[string]string{"another key for the host": impostor, "host not listed": unknown} {
		_, err := fetch(known)
		var kerr *knownhosts.KeyError
		if err == nil || !strings.Contains(err.Error(), "knownhosts") && !errors.As(err, &kerr) {
			t.Fatalf("%s: want a host key refusal, got %v", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	if _, err := NewSource(url, "", "", Credentials{SSHKeyFile: keyFile}); err == nil || !strings.Contains(err.Error(), "--git-known-hosts") {
		t.Fatalf("ssh without known_hosts: %v", err)
	}
}
