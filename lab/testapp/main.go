// Command testapp is the workload the lab runs on the VLANs: a static HTTP
// server that reports which container answered and on which addresses, so a
// test can tell tasks apart by their VLAN IPs. It has no dependencies and is
// packaged FROM scratch, because the test machines cannot pull images.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", ":8080", "address to serve HTTP on")
	health := flag.Bool("health", false, "probe http://127.0.0.1<port>/health of -listen and exit 0 when it answers 200, 1 otherwise (for a container healthcheck: a scratch image has no curl)")
	get := flag.String("get", "", "GET this URL, print the body to stdout and exit 0 when it answers 200, 1 otherwise (a scratch image has no curl: a one-off container checks reachability with it)")
	flag.Parse()

	if *get != "" {
		if err := fetch(os.Stdout, *get, 5*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "get:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if *health {
		if err := probe(*listen, 2*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "unhealthy:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if err := serve(ctx, ln); err != nil {
		log.Fatal(err)
	}
}

// serve answers on ln until ctx is done, then drains in-flight requests so
// a rolling update does not cut a probe in half.
func serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		host, _ := os.Hostname()
		fmt.Fprintf(w, "hostname %s\n", host)
		for _, a := range addresses() {
			fmt.Fprintf(w, "address %s\n", a)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

// addresses lists the container's non-loopback addresses without their
// prefix length, sorted, one per interface address.
func addresses() []string {
	var out []string
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok || ipnet.IP.IsLoopback() {
			continue
		}
		out = append(out, ipnet.IP.String())
	}
	sort.Strings(out)
	return out
}

// probe GETs /health on the loopback address at listen's port.
func probe(listen string, timeout time.Duration) error {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", listen, err)
	}
	client := &http.Client{Timeout: timeout}
	// 127.0.0.1 rather than the name localhost: a scratch image may have no
	// /etc/hosts when run outside Docker.
	resp, err := client.Get("http://" + net.JoinHostPort("127.0.0.1", port) + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}

// fetch GETs url and copies the body to w; anything but 200 is an error.
func fetch(w io.Writer, url string, timeout time.Duration) error {
	client := &http.Client{Timeout: timeout}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	if err != nil {
		return fmt.Errorf("read body from %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	_, err = w.Write(body)
	return err
}
