// Package gitsync is the GitOps sync: the leader fetches a git repository
// with go-git (no git binary), reads every document under a path, and
// makes the spec tree in Consul hold exactly the documents of one commit,
// all or nothing, through state's fenced, chunked sync transactions. It
// records the commit in force, reverts or reports hand edits of the spec
// tree, and takes push notifications from GitHub, Gitea/Forgejo and GitLab
// webhooks.
package gitsync

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
)

// Credentials name the files secrets are read from; empty fields are unused.
type Credentials struct {
	// Username goes with PasswordFile or TokenFile over HTTPS.
	Username string
	// PasswordFile holds an HTTPS basic-auth password.
	PasswordFile string
	// TokenFile holds an access token, sent as the basic-auth password
	// (GitHub, GitLab and Gitea all take it so), with Username or
	// "x-access-token".
	TokenFile string
	// SSHKeyFile is a private key (OpenSSH or PEM) for ssh URLs.
	SSHKeyFile string
	// KnownHostsFile lists the SSH server keys accepted; required with
	// SSHKeyFile: there is no accept-any-host-key mode.
	KnownHostsFile string
	// CAFile holds PEM certificates trusted for https beside the system's.
	CAFile string
}

// Source is a repository to sync from.
type Source struct {
	// URL is the repository without credentials (safe to show).
	URL string
	// Branch is the branch synced; empty means the remote's HEAD.
	Branch string
	// Path is the directory of the documents in the tree; empty is the root.
	Path string
	// Auth is how go-git authenticates, nil for none.
	Auth transport.AuthMethod
	// CABundle is trusted for https beside the system's roots.
	CABundle []byte

	secrets []string
}

// scpLike is git's user@host:path form of an SSH URL.
var scpLike = regexp.MustCompile(`^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^/]`)

// NewSource checks rawURL and reads the credentials it needs. Credentials
// in the URL itself (https://user:pass@host/...) are taken out of it: the
// URL kept, shown and logged carries none.
func NewSource(rawURL, branch, path string, c Credentials) (Source, error) {
	src := Source{Branch: branch, Path: strings.Trim(path, "/")}
	if src.Path == "." {
		src.Path = ""
	}
	if strings.Contains(src.Path, "..") {
		return Source{}, fmt.Errorf("--git-path %q: must not hold ..", path)
	}
	isSSH := scpLike.MatchString(rawURL) || strings.HasPrefix(rawURL, "ssh://")
	if isSSH {
		src.URL = rawURL
		if u, err := url.Parse(rawURL); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				return Source{}, errors.New("--git-url: an ssh URL must not carry a password")
			}
		}
		if c.SSHKeyFile == "" {
			return Source{}, errors.New("--git-ssh-key: an ssh URL needs a private key file")
		}
		if c.KnownHostsFile == "" {
			return Source{}, errors.New("--git-known-hosts: an ssh URL needs a known_hosts file (host keys are always checked)")
		}
		user := "git"
		if u, err := url.Parse(rawURL); err == nil && u.User != nil && u.User.Username() != "" {
			user = u.User.Username()
		} else if at := strings.Index(rawURL, "@"); at > 0 && scpLike.MatchString(rawURL) {
			user = rawURL[:at]
		}
		keys, err := gitssh.NewPublicKeysFromFile(user, c.SSHKeyFile, "")
		if err != nil {
			return Source{}, fmt.Errorf("--git-ssh-key %s: %w", c.SSHKeyFile, err)
		}
		cb, err := gitssh.NewKnownHostsCallback(c.KnownHostsFile)
		if err != nil {
			return Source{}, fmt.Errorf("--git-known-hosts %s: %w", c.KnownHostsFile, err)
		}
		keys.HostKeyCallback = cb
		src.Auth = keys
		return src, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return Source{}, fmt.Errorf("--git-url: %w", redactURLError(err))
	}
	switch u.Scheme {
	case "https", "http", "file":
	default:
		return Source{}, fmt.Errorf("--git-url: scheme %q: want https, http, ssh or file", u.Scheme)
	}
	if c.SSHKeyFile != "" {
		return Source{}, errors.New("--git-ssh-key: given with a non-ssh URL")
	}
	user, pass := c.Username, ""
	if u.User != nil {
		if user == "" {
			user = u.User.Username()
		}
		pass, _ = u.User.Password()
		u.User = nil
	}
	src.URL = u.String()
	if c.CAFile != "" {
		if src.CABundle, err = os.ReadFile(c.CAFile); err != nil {
			return Source{}, fmt.Errorf("--git-ca-file: %w", err)
		}
	}
	switch {
	case c.PasswordFile != "" && c.TokenFile != "":
		return Source{}, errors.New("--git-password-file and --git-token-file: give one")
	case c.PasswordFile != "":
		if pass, err = readSecret("--git-password-file", c.PasswordFile); err != nil {
			return Source{}, err
		}
	case c.TokenFile != "":
		if pass, err = readSecret("--git-token-file", c.TokenFile); err != nil {
			return Source{}, err
		}
		if user == "" {
			user = "x-access-token"
		}
	}
	if pass != "" {
		if user == "" {
			user = "git"
		}
		src.Auth = &githttp.BasicAuth{Username: user, Password: pass}
		src.secrets = append(src.secrets, pass)
	}
	return src, nil
}

// readSecret reads a one-line secret file; the error never holds its content.
func readSecret(flag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s: empty", flag, path)
	}
	return s, nil
}

// ReadWebhookSecret is the webhook secret: from file when given, else the
// value of env (empty: webhooks off).
func ReadWebhookSecret(file, env string) ([]byte, error) {
	if file != "" {
		s, err := readSecret("--git-webhook-secret-file", file)
		return []byte(s), err
	}
	return []byte(strings.TrimSpace(os.Getenv(env))), nil
}

// Redact returns err's text with every secret of the source and any
// credentials in URLs replaced, for status, logs and errors.
func (s Source) Redact(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	for _, sec := range s.secrets {
		if sec != "" {
			msg = strings.ReplaceAll(msg, sec, "REDACTED")
		}
	}
	return userinfo.ReplaceAllString(msg, "${1}REDACTED@")
}

var userinfo = regexp.MustCompile(`(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@`)

// redactURLError drops the URL from a url.Parse error, which quotes it.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
