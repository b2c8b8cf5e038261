package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"swarmvlan/reconcile/gitsync"
	"swarmvlan/state"
)

// webhookSecretEnv holds the webhook secret itself, for deployments that
// pass secrets in the environment rather than in files.
const webhookSecretEnv = "SWARMVLAN_GIT_WEBHOOK_SECRET"

// gitFlags are run's GitOps flags.
type gitFlags struct {
	url, branch, path, drift              *string
	interval, txnPause                    *time.Duration
	allowEmpty                            *bool
	username, passwordFile, tokenFile     *string
	sshKey, knownHosts, webhookSecretFile *string
	caFile                                *string
}

// registerGitFlags adds the GitOps sync's flags to run's flag set.
func registerGitFlags(fs *flag.FlagSet) *gitFlags {
	return &gitFlags{
		url:               fs.String("git-url", "", "sync the spec from this git repository (https://, http://, ssh:// or user@host:path); the leading manager fetches it and applies every commit all or nothing"),
		branch:            fs.String("git-branch", "", "branch to sync (default: the remote's HEAD)"),
		path:              fs.String("git-path", "", "directory of the documents in the repository, read with every subdirectory (default: the root)"),
		interval:          fs.Duration("git-interval", time.Minute, "how often the leader fetches the repository (webhooks trigger a sync at once)"),
		drift:             fs.String("git-drift", gitsync.DriftRevert, "what a sync does with hand edits of keys under spec/: revert (and count them) or report (keep them, list them in the sync status)"),
		allowEmpty:        fs.Bool("git-allow-empty", false, "let a commit without any document delete every document (otherwise it needs a "+gitsync.AllowEmptyMarker+" file in --git-path)"),
		username:          fs.String("git-username", "", "HTTPS user name, with --git-password-file or --git-token-file"),
		passwordFile:      fs.String("git-password-file", "", "file holding the HTTPS basic-auth password"),
		tokenFile:         fs.String("git-token-file", "", "file holding an HTTPS access token (sent as the password, user --git-username or x-access-token)"),
		sshKey:            fs.String("git-ssh-key", "", "private key file for an ssh URL (unencrypted)"),
		knownHosts:        fs.String("git-known-hosts", "", "known_hosts file the SSH server's key must be in (required with an ssh URL)"),
		caFile:            fs.String("git-ca-file", "", "PEM certificates trusted for an https URL beside the system's roots"),
		webhookSecretFile: fs.String("git-webhook-secret-file", "", "file holding the webhook secret that POST /v1/git/webhook checks (also $"+webhookSecretEnv+"); without one, webhooks are off"),
		txnPause:          fs.Duration("git-txn-pause", 0, "pause between the transactions of one sync (a fault drill: a leader killed in it leaves a cut sync for the next to finish)"),
	}
}

// gitSync is the daemon's GitOps part: the syncer (run while leading) and
// the webhook.
type gitSync struct {
	syncer  *gitsync.Syncer
	branch  string
	webhook *gitsync.Webhook
	hooks   *prometheus.CounterVec
}

// initGit builds the syncer when --git-url is set. It fails at start on a
// bad flag or an unreadable secret, so a misconfigured manager does not
// run without its sync.
func (d *daemon) initGit(f *gitFlags, holder string) error {
	if *f.url == "" {
		for _, o := range []struct{ name, value string }{
			{"git-branch", *f.branch}, {"git-path", *f.path}, {"git-ssh-key", *f.sshKey},
			{"git-password-file", *f.passwordFile}, {"git-token-file", *f.tokenFile},
			{"git-webhook-secret-file", *f.webhookSecretFile},
		} {
			if o.value != "" {
				return fmt.Errorf("--%s: needs --git-url", o.name)
			}
		}
		return nil
	}
	if d.cluster == nil {
		return errors.New("--git-url: only managers sync (--role manager or all)")
	}
	switch *f.drift {
	case gitsync.DriftRevert, gitsync.DriftReport:
	default:
		return fmt.Errorf("--git-drift: must be revert or report, not %q", *f.drift)
	}
	if *f.interval < time.Second {
		return fmt.Errorf("--git-interval: %v: at least 1s", *f.interval)
	}
	src, err := gitsync.NewSource(*f.url, *f.branch, *f.path, gitsync.Credentials{
		Username: *f.username, PasswordFile: *f.passwordFile, TokenFile: *f.tokenFile,
		SSHKeyFile: *f.sshKey, KnownHostsFile: *f.knownHosts, CAFile: *f.caFile,
	})
	if err != nil {
		return err
	}
	repo, err := gitsync.Open(src)
	if err != nil {
		return err
	}
	cfg := gitsync.Config{
		Store: d.store, Repo: repo, Interval: *f.interval, Drift: *f.drift, AllowEmpty: *f.allowEmpty,
		Holder: holder, Log: d.log.With("controller", "gitsync"),
	}
	if pause := *f.txnPause; pause > 0 {
		cfg.Commit.BetweenTxns = func(done, total int) error {
			d.log.Info("sync paused between transactions", "done", done, "total", total, "pause", pause)
			time.Sleep(pause)
			return nil
		}
	}
	g := &gitSync{syncer: gitsync.New(cfg), branch: src.Branch}
	secret, err := gitsync.ReadWebhookSecret(*f.webhookSecretFile, webhookSecretEnv)
	if err != nil {
		return err
	}
	g.hooks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "swarmvlan_git_webhook_requests_total",
		Help: "Git webhook requests, by result (accepted, ignored, unauthorized, too_large, invalid, error).",
	}, []string{"result"})
	for _, r := range []string{"accepted", "ignored", "unauthorized", "too_large", "invalid", "error"} {
		g.hooks.WithLabelValues(r)
	}
	if len(secret) > 0 {
		g.webhook = &gitsync.Webhook{
			Secret:  secret,
			Branch:  g.syncedBranch(d.store),
			Trigger: d.gitTrigger(holder),
			Log:     d.log.With("api", "git-webhook"),
			Observe: func(result string) { g.hooks.WithLabelValues(result).Inc() },
		}
	} else {
		d.log.Warn("no webhook secret: POST /v1/git/webhook is off; the repository is polled every --git-interval", "flag", "--git-webhook-secret-file", "env", webhookSecretEnv)
	}
	d.http.metrics.reg.MustRegister(g.hooks, gitCollector{g.syncer})
	d.git = g
	d.log.Info("git sync configured", "repo", src.URL, "branch", src.Branch, "path", src.Path, "interval", *f.interval, "drift", *f.drift, "webhook", g.webhook != nil)
	return nil
}

// syncedBranch is the branch a push must be to: the flag's, else the one
// the leader resolved from the remote's HEAD (its record in KV).
func (g *gitSync) syncedBranch(store *state.Store) func() string {
	return func() string {
		if g.branch != "" {
			return g.branch
		}
		if st, ok := g.syncer.Last(); ok && st.Branch != "" {
			return st.Branch
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var st gitsync.Status
		if found, err := store.ReadSyncStatus(ctx, &st); err == nil && found {
			return st.Branch
		}
		return ""
	}
}

// gitTrigger passes a push on: straight to the syncer on the leader, else
// through the trigger key the leader watches.
func (d *daemon) gitTrigger(holder string) func(ctx context.Context, p gitsync.Push) error {
	return func(ctx context.Context, p gitsync.Push) error {
		if d.leading.Load() {
			d.git.syncer.Trigger()
			return nil
		}
		return d.store.TriggerSync(ctx, state.SyncTrigger{Ref: p.Ref, Commit: p.Commit, From: holder, At: time.Now().UTC()})
	}
}

// startGitSync runs the syncer under lead; the returned function stops it
// and waits for it.
func (d *daemon) startGitSync(lead *state.Leadership) func() {
	if d.git == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(lead.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.git.syncer.Run(ctx, lead)
	}()
	return func() {
		cancel()
		<-done
	}
}

// gitRoutes adds POST /v1/git/webhook.
func (d *daemon) gitRoutes(mux *http.ServeMux) {
	if d.git == nil {
		return
	}
	if d.git.webhook == nil {
		mux.HandleFunc("POST /v1/git/webhook", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "git webhook not configured (--git-webhook-secret-file)", http.StatusNotFound)
		})
		return
	}
	mux.Handle("POST /v1/git/webhook", d.git.webhook)
}

// gitCollector exports the sync's figures once this process has led a
// sync (or read its record): a follower has none of its own.
type gitCollector struct{ s *gitsync.Syncer }

var (
	gitLastSyncDesc = prometheus.NewDesc("swarmvlan_git_last_sync_timestamp_seconds",
		"When the spec tree was last seen holding the commit in force (a successful sync).", nil, nil)
	gitCommitAgeDesc = prometheus.NewDesc("swarmvlan_git_commit_age_seconds",
		"Age of the commit in force (now minus its author time).", nil, nil)
	gitFailuresDesc = prometheus.NewDesc("swarmvlan_git_sync_failures_total",
		"Sync attempts by this process that did not put the branch's head in force (unreachable, invalid, refused, Consul errors).", nil, nil)
	gitDriftDesc = prometheus.NewDesc("swarmvlan_git_drift_corrections",
		"Hand edits of the spec tree reverted by syncs, as the sync record counts them.", nil, nil)
	gitInvalidDesc = prometheus.NewDesc("swarmvlan_git_sync_problems",
		"Problems of the last commit attempted (0 once a commit is in force).", nil, nil)
)

func (c gitCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{gitLastSyncDesc, gitCommitAgeDesc, gitFailuresDesc, gitDriftDesc, gitInvalidDesc} {
		ch <- d
	}
}

func (c gitCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(gitFailuresDesc, prometheus.CounterValue, float64(c.s.Failures()))
	st, ok := c.s.Last()
	if !ok {
		return
	}
	if !st.Synced.IsZero() {
		ch <- prometheus.MustNewConstMetric(gitLastSyncDesc, prometheus.GaugeValue, float64(st.Synced.UnixNano())/1e9)
	}
	if st.Commit != nil {
		ch <- prometheus.MustNewConstMetric(gitCommitAgeDesc, prometheus.GaugeValue, time.Since(st.Commit.Time).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(gitDriftDesc, prometheus.GaugeValue, float64(st.DriftCorrections))
	ch <- prometheus.MustNewConstMetric(gitInvalidDesc, prometheus.GaugeValue, float64(len(st.Problems)))
}

// printSyncLine prints the GitOps sync's line of `reconciler status`, when
// there is a sync record.
func printSyncLine(ctx context.Context, w io.Writer, store *state.Store) error {
	var st gitsync.Status
	found, err := store.ReadSyncStatus(ctx, &st)
	if err != nil || !found {
		return err
	}
	fmt.Fprint(w, syncLine(st, time.Now()))
	return nil
}

// syncLine is the sync record in one line, and one more per problem.
func syncLine(st gitsync.Status, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "sync: %s", st.Repo)
	if st.Branch != "" {
		fmt.Fprintf(&b, " %s", st.Branch)
	}
	if st.Path != "" {
		fmt.Fprintf(&b, " /%s", st.Path)
	}
	if c := st.Commit; c != nil {
		msg, _, _ := strings.Cut(c.Message, "\n")
		fmt.Fprintf(&b, ": commit %.12s in force (%s, %s, %q)", c.Hash, c.Author, c.Time.Format(time.RFC3339), msg)
	} else {
		b.WriteString(": no commit in force yet")
	}
	if !st.LastAttempt.IsZero() {
		fmt.Fprintf(&b, "; last attempt %s ago: %s", now.Sub(st.LastAttempt).Round(time.Second), st.LastResult)
		if st.LastCommit != "" && (st.Commit == nil || st.LastCommit != st.Commit.Hash) {
			fmt.Fprintf(&b, " (commit %.12s)", st.LastCommit)
		}
	}
	fmt.Fprintf(&b, "; drift %s, %d corrected", st.DriftMode, st.DriftCorrections)
	if len(st.Drift) > 0 {
		fmt.Fprintf(&b, ", differing now: %s", strings.Join(st.Drift, ", "))
	}
	b.WriteString("\n")
	if st.LastError != "" {
		fmt.Fprintf(&b, "  error: %s\n", st.LastError)
	}
	for _, p := range st.Problems {
		fmt.Fprintf(&b, "  %s\n", p)
	}
	return b.String()
}
