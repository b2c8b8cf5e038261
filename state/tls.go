package state

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// TLSError is an HTTPS connection to Consul that failed for a reason
// retrying will not cure: the server's certificate is not signed by the CA
// the client trusts, is not valid for the name asked for, or the server
// refused the client's certificate (verify_incoming). It says which file or
// variable to look at.
type TLSError struct {
	// Addr is Consul's address as configured.
	Addr string
	// Problem says what is wrong, naming the CA file or the variable.
	Problem string
	// Err is the handshake's error.
	Err error
}

// Error names the address and the problem.
func (e *TLSError) Error() string {
	return fmt.Sprintf("consul %s: %s: %v", e.Addr, e.Problem, e.Err)
}

// Unwrap returns the handshake's error.
func (e *TLSError) Unwrap() error { return e.Err }

// tlsRefusal returns the function that explains a failed request to the
// client configured by ac, or nil when it does not use TLS. An explained
// failure is also passed to Config.OnRefused.
func (s *Store) tlsRefusal(ac *api.Config) func(error) *TLSError {
	if ac.Scheme != "https" {
		return nil
	}
	addr := "https://" + ac.Address
	tc := ac.TLSConfig
	var clientTLS *tls.Config
	if tr, ok := transportOf(ac.HttpClient).(*http.Transport); ok && tr.TLSClientConfig != nil {
		clientTLS = tr.TLSClientConfig.Clone()
	}
	return func(err error) *TLSError {
		problem := tlsProblem(err, tc)
		if problem == "" && clientTLS != nil && connBroken(err) {
			// With TLS 1.3 the server checks the client's certificate after
			// the client has finished its handshake, so a refusal shows as
			// a broken connection to the request that follows. A fresh
			// handshake and a read catch the server's alert.
			if perr := probeTLS(ac.Address, clientTLS); perr != nil {
				problem = tlsProblem(perr, tc)
				if problem != "" {
					err = perr
				}
			}
		}
		if problem == "" {
			return nil
		}
		te := &TLSError{Addr: addr, Problem: problem, Err: err}
		if f := s.cfg.OnRefused; f != nil {
			f(te)
		}
		return te
	}
}

// tlsProblem says in words what a handshake error means for someone
// setting the CONSUL_* variables, or "" when err is not such an error.
func tlsProblem(err error, tc api.TLSConfig) string {
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	var alert tls.AlertError
	switch {
	case errors.As(err, &unknown):
		switch {
		case tc.CAFile != "":
			return fmt.Sprintf("the server's certificate is not signed by the CA in %s (CONSUL_CACERT)", tc.CAFile)
		case tc.CAPath != "":
			return fmt.Sprintf("the server's certificate is not signed by any CA in %s (CONSUL_CAPATH)", tc.CAPath)
		default:
			return "the server's certificate is not signed by a CA this system trusts; name Consul's CA with CONSUL_CACERT"
		}
	case errors.As(err, &host):
		return fmt.Sprintf("the server's certificate is not valid for %q; set CONSUL_TLS_SERVER_NAME to a name it holds (%s)",
			host.Host, strings.Join(certNames(host.Certificate), ", "))
	case errors.As(err, &invalid):
		return "the server's certificate is not valid: " + invalid.Error()
	case errors.As(err, &alert) && (alert == 116 || alert == 42 || alert == 48),
		strings.Contains(err.Error(), "tls: certificate required"),
		strings.Contains(err.Error(), "tls: bad certificate"),
		strings.Contains(err.Error(), "tls: unknown certificate authority"):
		// 116 certificate_required, 42 bad_certificate, 48 unknown_ca: the
		// server wants a client certificate (verify_incoming) signed by its
		// CA.
		if tc.CertFile == "" {
			return "the server requires a client certificate (verify_incoming); give one signed by its CA with CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY"
		}
		return fmt.Sprintf("the server refused the client certificate %s (CONSUL_CLIENT_CERT); it must be signed by the server's CA", tc.CertFile)
	}
	return ""
}

// certNames lists the DNS names and IP addresses a certificate is valid for.
func certNames(c *x509.Certificate) []string {
	if c == nil {
		return nil
	}
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		names = []string{"no names"}
	}
	return names
}

// connBroken reports whether err is a connection closed under a request.
func connBroken(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) ||
		// The HTTP/2 transport reports a connection the server closed
		// during its preface this way, without the cause.
		strings.Contains(err.Error(), "http2: client conn could not be established")
}

// probeTLS makes one TLS connection to addr and reads from it briefly: a
// server that refuses the client's certificate answers with an alert,
// which is returned. nil means the probe saw no refusal.
func probeTLS(addr string, cfg *tls.Config) error {
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil
		}
		cfg.ServerName = host
	}
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	}
	return nil
}
