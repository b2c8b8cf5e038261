package secure

import (
	"strings"
	"testing"
	"time"

	"swarmvlan/lab"
)

// TestTLSRefusalsSayWhatToFix: against a Consul that serves HTTPS only with
// verify_incoming, a command or daemon configured with the wrong CA, no
// client certificate, a client certificate of another CA, or plain HTTP is
// refused, and the message names the file or variable to fix. With the
// right files, https:// in the address is all it takes to speak TLS.
func TestTLSRefusalsSayWhatToFix(t *testing.T) {
	agent, certs := lab.StartConsulTLS(t)
	prefix := "swarmvlan-tls-" + suffix(t) + "/"
	addr := "CONSUL_HTTP_ADDR=https://" + agent.Addr
	base := []string{"SWARMVLAN_PREFIX=" + prefix}
	good := append([]string{addr, "CONSUL_CACERT=" + certs.CAFile, "CONSUL_CLIENT_CERT=" + certs.CertFile, "CONSUL_CLIENT_KEY=" + certs.KeyFile}, base...)
	mustCommand(t, good, "get", "vlan")

	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"wrong CA", append([]string{addr, "CONSUL_CACERT=" + certs.OtherCAFile, "CONSUL_CLIENT_CERT=" + certs.CertFile, "CONSUL_CLIENT_KEY=" + certs.KeyFile}, base...),
			"the server's certificate is not signed by the CA in " + certs.OtherCAFile + " (CONSUL_CACERT)"},
		{"no CA", append([]string{addr, "CONSUL_CLIENT_CERT=" + certs.CertFile, "CONSUL_CLIENT_KEY=" + certs.KeyFile}, base...),
			"not signed by a CA this system trusts; name Consul's CA with CONSUL_CACERT"},
		{"no client certificate", append([]string{addr, "CONSUL_CACERT=" + certs.CAFile}, base...),
			"the server requires a client certificate (verify_incoming); give one signed by its CA with CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY"},
		{"client certificate of another CA", append([]string{addr, "CONSUL_CACERT=" + certs.CAFile, "CONSUL_CLIENT_CERT=" + certs.OtherCertFile, "CONSUL_CLIENT_KEY=" + certs.OtherKeyFile}, base...),
			"the server refused the client certificate " + certs.OtherCertFile + " (CONSUL_CLIENT_CERT)"},
		{"plain HTTP", append([]string{"CONSUL_HTTP_ADDR=" + agent.Addr}, base...),
			"Client sent an HTTP request to an HTTPS server"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, args := range [][]string{{"get", "vlan"}, {"status"}} {
				code, out, errOut := command(t, c.env, args...)
				if code == 0 || !strings.Contains(errOut, c.want) {
					t.Errorf("%s: exit %d, stdout %q\nstderr: %s\nwant it to say: %s", strings.Join(args, " "), code, out, errOut, c.want)
				}
			}
		})
	}

	// The daemon keeps trying, and says why in its log.
	wrongCA := append([]string{"CONSUL_HTTP_SSL=true", "CONSUL_CACERT=" + certs.OtherCAFile, "CONSUL_CLIENT_CERT=" + certs.CertFile, "CONSUL_CLIENT_KEY=" + certs.KeyFile}, base...)
	p := startRun(t, "manager", "", wrongCA, "--role", "manager", "--consul-addr", agent.Addr)
	waitFor(t, 20*time.Second, "the daemon to log the refused certificate", func() bool {
		l := grep(p.Logs(), `msg="consul TLS refused; retrying"`)
		return strings.Contains(l, "not signed by the CA in "+certs.OtherCAFile)
	})
	if p.cmd.ProcessState != nil {
		t.Errorf("the daemon exited: %v", p.cmd.ProcessState)
	}
	if strings.Contains(p.Logs(), "msg=leading") {
		t.Error("the daemon leads through a connection it cannot trust")
	}
	p.Stop(t)
}
