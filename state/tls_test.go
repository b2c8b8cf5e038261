package state

import (
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"swarmvlan/lab"
)

// TestTLSFromTheStandardVariables: the store speaks TLS when an address
// says https://, or when CONSUL_HTTP_SSL is set and the address (given
// explicitly, as --consul-addr does) has no scheme, trusting CONSUL_CACERT;
// a server whose certificate that CA did not sign is refused naming the
// file.
func TestTLSFromTheStandardVariables(t *testing.T) {
	certs, err := lab.NewConsulCerts(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certs.ServerCertFile, certs.ServerKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Consul-Index", "7")
		w.Write([]byte("[]"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca, wrongCA := certs.CAFile, certs.OtherCAFile
	host := strings.TrimPrefix(srv.URL, "https://")
	for _, c := range []struct {
		name, addr, ssl, ca string
		wantErr             string
	}{
		{"https address", "https://" + host, "", ca, ""},
		{"CONSUL_HTTP_SSL and a bare address", host, "true", ca, ""},
		{"CONSUL_HTTP_SSL and an http:// address", "http://" + host, "true", ca, ""},
		{"wrong CA", "https://" + host, "", wrongCA, "the server's certificate is not signed by the CA in " + wrongCA + " (CONSUL_CACERT)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("CONSUL_HTTP_ADDR", "")
			t.Setenv("CONSUL_HTTP_SSL", c.ssl)
			t.Setenv("CONSUL_CACERT", c.ca)
			var told []error
			s, err := New(Config{Address: c.addr, OnRefused: func(err error) { told = append(told, err) }})
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.SpecDocs(t.Context())
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("SpecDocs over TLS: %v", err)
				}
				return
			}
			var te *TLSError
			if !errors.As(err, &te) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("SpecDocs: %v; want a TLSError saying %q", err, c.wantErr)
			}
			if len(told) == 0 {
				t.Error("OnRefused not told of the TLS refusal")
			}
		})
	}
}
