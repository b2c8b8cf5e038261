package lab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// consulSecurity is what an agent with ACLs or TLS needs beyond the plain
// agent: its configuration, and how the lab's own requests (the readiness
// check, Client) reach it. A nil *consulSecurity is a plain agent.
type consulSecurity struct {
	// token is the initial management token; "" without ACLs.
	token string
	// certs, when set, make the agent serve its API over HTTPS only, with
	// verify_incoming.
	certs *ConsulCerts
}

func (s *consulSecurity) args(a *ConsulAgent) []string {
	if s == nil {
		return nil
	}
	var args []string
	if s.token != "" {
		args = append(args, "-hcl", fmt.Sprintf(`acl {
  enabled = true
  default_policy = "deny"
  enable_token_persistence = false
  tokens {
    initial_management = %q
    agent = %q
  }
}`, s.token, s.token))
	}
	if c := s.certs; c != nil {
		// The HTTPS API takes the HTTP port's place, so the agent keeps the
		// ports it was given and plain HTTP is not served at all.
		args = append(args, "-http-port", "-1", "-https-port", strconv.Itoa(a.Ports.HTTP),
			"-hcl", fmt.Sprintf(`tls {
  defaults {
    ca_file = %q
    cert_file = %q
    key_file = %q
    verify_incoming = true
    verify_outgoing = true
  }
}`, c.CAFile, c.ServerCertFile, c.ServerKeyFile))
	}
	return args
}

func (s *consulSecurity) scheme() string {
	if s != nil && s.certs != nil {
		return "https"
	}
	return "http"
}

// httpClient is how the lab's readiness check talks to the agent: with the
// client certificate and the management token when it has them.
func (s *consulSecurity) httpClient() *http.Client {
	hc := &http.Client{Timeout: 2 * time.Second}
	if s == nil {
		return hc
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.certs != nil {
		tr.TLSClientConfig = s.certs.clientTLS()
	}
	hc.Transport = tokenTransport{token: s.token, next: tr}
	return hc
}

type tokenTransport struct {
	token string
	next  http.RoundTripper
}

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.token != "" {
		r = r.Clone(r.Context())
		r.Header.Set("X-Consul-Token", t.token)
	}
	return t.next.RoundTrip(r)
}

// WithACL runs the agent with ACLs enabled, default_policy "deny", and
// managementToken as both its initial management token and its own agent
// token. Anything else must bring a token that allows what it does.
func WithACL(managementToken string) ConsulOption {
	return func(c *consulConfig) {
		if c.secure == nil {
			c.secure = &consulSecurity{}
		}
		c.secure.token = managementToken
	}
}

// WithTLS makes the agent serve its HTTP API over HTTPS only (on the port
// Addr names), with certs' server certificate, requiring client
// certificates signed by certs' CA (verify_incoming).
func WithTLS(certs *ConsulCerts) ConsulOption {
	return func(c *consulConfig) {
		if c.secure == nil {
			c.secure = &consulSecurity{}
		}
		c.secure.certs = certs
	}
}

// NewToken returns a random token secret in Consul's UUID form.
func NewToken() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// StartConsulACL starts a dev agent for a test with ACLs enabled and
// default_policy "deny", and returns it with its management token.
func StartConsulACL(t testing.TB, opts ...ConsulOption) (*ConsulAgent, string) {
	t.Helper()
	token := NewToken()
	return StartConsul(t, append([]ConsulOption{WithACL(token)}, opts...)...), token
}

// StartConsulTLS starts a dev agent for a test that serves its API over
// HTTPS only with verify_incoming, with a CA and server and client
// certificates made for it, and returns it with those certificates.
func StartConsulTLS(t testing.TB, opts ...ConsulOption) (*ConsulAgent, *ConsulCerts) {
	t.Helper()
	certs, err := NewConsulCerts(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatalf("consul certificates: %v", err)
	}
	return StartConsul(t, append([]ConsulOption{WithTLS(certs)}, opts...)...), certs
}

// URL is the agent's API address with its scheme (https:// for a TLS
// agent).
func (a *ConsulAgent) URL() string { return a.cfg.secure.scheme() + "://" + a.Addr }

// ClientWithToken returns an API client for the agent that sends token
// (and, for a TLS agent, trusts its CA and presents the client
// certificate), failing the test on error.
func (a *ConsulAgent) ClientWithToken(t testing.TB, token string) *api.Client {
	t.Helper()
	cfg := &api.Config{Address: a.Addr, Scheme: a.cfg.secure.scheme(), Token: token}
	if s := a.cfg.secure; s != nil && s.certs != nil {
		cfg.TLSConfig = api.TLSConfig{CAFile: s.certs.CAFile, CertFile: s.certs.CertFile, KeyFile: s.certs.KeyFile}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("consul client for %s: %v", a.Addr, err)
	}
	return c
}

// ManagementToken is the agent's initial management token ("" without
// ACLs).
func (a *ConsulAgent) ManagementToken() string {
	if a.cfg.secure == nil {
		return ""
	}
	return a.cfg.secure.token
}

// Env returns the standard Consul variables that point a client (the
// reconciler, the consul CLI) at the agent with token: CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN and, for a TLS agent, CONSUL_HTTP_SSL, CONSUL_CACERT,
// CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY.
func (a *ConsulAgent) Env(token string) []string {
	env := []string{"CONSUL_HTTP_ADDR=" + a.Addr}
	if token != "" {
		env = append(env, "CONSUL_HTTP_TOKEN="+token)
	}
	if s := a.cfg.secure; s != nil && s.certs != nil {
		env = append(env, "CONSUL_HTTP_SSL=true", "CONSUL_CACERT="+s.certs.CAFile,
			"CONSUL_CLIENT_CERT="+s.certs.CertFile, "CONSUL_CLIENT_KEY="+s.certs.KeyFile)
	}
	return env
}

// ConsulCerts are PEM files for a TLS agent: a CA, a server certificate it
// signed, a client certificate it signed, and a second, unrelated CA with
// its own client certificate for tests of what must be refused.
type ConsulCerts struct {
	Dir string
	// CAFile is the CA that signed the server and client certificates.
	CAFile string
	// ServerCertFile and ServerKeyFile are the agent's certificate, valid
	// for the hosts NewConsulCerts was given and server.dc1.consul.
	ServerCertFile, ServerKeyFile string
	// CertFile and KeyFile are a client certificate signed by CAFile.
	CertFile, KeyFile string
	// OtherCAFile is a CA that signed nothing the agent holds, and
	// OtherCertFile and OtherKeyFile a client certificate it signed.
	OtherCAFile, OtherCertFile, OtherKeyFile string

	clientCert tls.Certificate
	pool       *x509.CertPool
}

func (c *ConsulCerts) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: c.pool, Certificates: []tls.Certificate{c.clientCert}, MinVersion: tls.VersionTLS12}
}

// NewConsulCerts makes the certificates in dir (ECDSA P-256, valid for a
// day). hosts are the IP addresses or DNS names the server certificate is
// valid for.
func NewConsulCerts(dir string, hosts ...string) (*ConsulCerts, error) {
	c := &ConsulCerts{Dir: dir}
	file := func(name string) string { return filepath.Join(dir, name) }
	ca, caKey, err := newCA("swarmvlan lab CA", file("ca.pem"))
	if err != nil {
		return nil, err
	}
	c.CAFile = file("ca.pem")
	server := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "server.dc1.consul"},
		DNSNames:    []string{"server.dc1.consul", "localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			server.IPAddresses = append(server.IPAddresses, ip)
		} else {
			server.DNSNames = append(server.DNSNames, h)
		}
	}
	c.ServerCertFile, c.ServerKeyFile = file("server.pem"), file("server-key.pem")
	if _, err := issue(server, ca, caKey, c.ServerCertFile, c.ServerKeyFile); err != nil {
		return nil, err
	}
	client := &x509.Certificate{Subject: pkix.Name{CommonName: "swarmvlan client"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	c.CertFile, c.KeyFile = file("client.pem"), file("client-key.pem")
	if c.clientCert, err = issue(client, ca, caKey, c.CertFile, c.KeyFile); err != nil {
		return nil, err
	}
	other, otherKey, err := newCA("some other CA", file("other-ca.pem"))
	if err != nil {
		return nil, err
	}
	c.OtherCAFile = file("other-ca.pem")
	otherClient := &x509.Certificate{Subject: pkix.Name{CommonName: "stranger"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	c.OtherCertFile, c.OtherKeyFile = file("other-client.pem"), file("other-client-key.pem")
	if _, err := issue(otherClient, other, otherKey, c.OtherCertFile, c.OtherKeyFile); err != nil {
		return nil, err
	}
	c.pool = x509.NewCertPool()
	c.pool.AddCert(ca)
	return c, nil
}

func newCA(name, certFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("ca %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// issue signs tmpl with the CA and writes the certificate and its new key.
func issue(tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey, certFile, keyFile string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return tls.Certificate{}, err
	}
	if err := writePEM(keyFile, "EC PRIVATE KEY", keyDER); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(certFile, keyFile)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(err)
	}
	return n
}

func writePEM(path, typ string, der []byte) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// ACLToken is a token made for a test with one policy of its own.
type ACLToken struct {
	// Secret is what a client sends (CONSUL_HTTP_TOKEN).
	Secret string
	// AccessorID names the token in Consul's messages.
	AccessorID string
	// PolicyID is the token's policy, which SetRules changes.
	PolicyID string

	agent *ConsulAgent
}

// NewACLToken creates a policy named name with rules (HCL, as `consul acl
// policy create -rules` takes it) and a token holding only that policy,
// using the agent's management token.
func (a *ConsulAgent) NewACLToken(t testing.TB, name, rules string) *ACLToken {
	t.Helper()
	acl := a.ClientWithToken(t, a.ManagementToken()).ACL()
	p, _, err := acl.PolicyCreate(&api.ACLPolicy{Name: name, Rules: rules}, nil)
	if err != nil {
		t.Fatalf("acl policy %s: %v", name, err)
	}
	tok, _, err := acl.TokenCreate(&api.ACLToken{Description: name, Policies: []*api.ACLTokenPolicyLink{{ID: p.ID}}}, nil)
	if err != nil {
		t.Fatalf("acl token %s: %v", name, err)
	}
	return &ACLToken{Secret: tok.SecretID, AccessorID: tok.AccessorID, PolicyID: p.ID, agent: a}
}

// SetRules replaces the rules of the token's policy; clients holding the
// token see the change on their next request.
func (tk *ACLToken) SetRules(t testing.TB, rules string) {
	t.Helper()
	acl := tk.agent.ClientWithToken(t, tk.agent.ManagementToken()).ACL()
	p, _, err := acl.PolicyRead(tk.PolicyID, nil)
	if err != nil {
		t.Fatalf("acl policy %s: read: %v", tk.PolicyID, err)
	}
	p.Rules = rules
	if _, _, err := acl.PolicyUpdate(p, nil); err != nil {
		t.Fatalf("acl policy %s: update: %v", p.Name, err)
	}
}
