package gitsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"swarmvlan/state"
	"swarmvlan/state/backoff"
)

// Drift modes.
const (
	// DriftRevert makes every sync put the commit's documents back over
	// hand edits of the spec tree, and counts each correction.
	DriftRevert = "revert"
	// DriftReport keeps hand edits and lists them in the status.
	DriftReport = "report"
)

// Results of an attempt, the status's lastResult.
const (
	ResultSynced      = "synced"      // documents written
	ResultUnchanged   = "unchanged"   // the spec tree already held the commit
	ResultResumed     = "resumed"     // a cut sync finished
	ResultInvalid     = "invalid"     // a document does not decode or validate: nothing applied
	ResultRefused     = "refused"     // the commit would delete every document
	ResultUnreachable = "unreachable" // the repository could not be fetched
	ResultError       = "error"       // Consul refused or failed the writes
)

// Status is the sync's record at state.SyncStatusKey.
type Status struct {
	// Repo, Branch and Path say what is synced (the URL has no credentials).
	Repo   string `json:"repo"`
	Branch string `json:"branch,omitempty"`
	Path   string `json:"path,omitempty"`
	// Commit is the commit in force; nil before the first sync.
	Commit *Commit `json:"commit,omitempty"`
	// Synced is when the spec tree was last seen to hold Commit.
	Synced time.Time `json:"synced,omitzero"`
	// Documents are the documents Commit put in the spec tree: key under
	// spec/ → digest of the document's meaning. Drift is measured against it.
	Documents map[string]string `json:"documents,omitempty"`

	// LastAttempt, LastResult, LastCommit and LastError describe the
	// latest attempt, which may have failed while Commit stays in force.
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	LastResult  string    `json:"lastResult,omitempty"`
	LastCommit  string    `json:"lastCommit,omitempty"`
	LastError   string    `json:"lastError,omitempty"`
	// Problems are every problem of LastCommit's documents (result invalid).
	Problems []Problem `json:"problems,omitempty"`
	// Transactions is how many transactions the last write took.
	Transactions int `json:"transactions,omitempty"`

	// DriftMode is revert or report.
	DriftMode string `json:"driftMode"`
	// DriftCorrections counts hand edits reverted, over the record's life.
	DriftCorrections int `json:"driftCorrections"`
	// Drift lists the keys (under spec/) that differ from Commit now: in
	// report mode the edits kept; in revert mode those just reverted.
	Drift []string `json:"drift,omitempty"`
}

// Config is a Syncer's configuration.
type Config struct {
	Store *state.Store
	Repo  *Repo
	// Interval is the pause between two polls of the repository.
	Interval time.Duration
	// Drift is DriftRevert (default) or DriftReport.
	Drift string
	// AllowEmpty lets a commit without documents empty the spec tree, as
	// AllowEmptyMarker does.
	AllowEmpty bool
	// Holder names this process in the in-flight marker.
	Holder string
	Log    *slog.Logger
	// Commit tunes the transactions (tests and fault drills).
	Commit state.CommitOptions
}

// Syncer runs the sync on the leader.
type Syncer struct {
	cfg     Config
	trigger chan struct{}

	// mu serialises syncs; cur is the record as last written.
	mu  sync.Mutex
	cur Status

	last      atomic.Pointer[Status]
	failures  atomic.Uint64
	successAt atomic.Int64
}

// New returns a syncer; Run starts it.
func New(cfg Config) *Syncer {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Drift == "" {
		cfg.Drift = DriftRevert
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Syncer{cfg: cfg, trigger: make(chan struct{}, 1)}
}

// Trigger asks for a sync now (a push was announced); it never blocks.
func (s *Syncer) Trigger() {
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Last is the record this syncer last wrote or read, for metrics.
func (s *Syncer) Last() (Status, bool) {
	p := s.last.Load()
	if p == nil {
		return Status{}, false
	}
	return *p, true
}

// Failures counts attempts that did not put a commit in force.
func (s *Syncer) Failures() uint64 { return s.failures.Load() }

// LastSuccess is when a sync last left the spec tree holding the commit
// in force (zero: never, in this process).
func (s *Syncer) LastSuccess() time.Time {
	if n := s.successAt.Load(); n > 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Run syncs under lead until ctx or the leadership ends: at once
// (resuming from the record in KV, finishing a sync a previous leader left
// cut), then every Interval and on every Trigger or trigger key write.
func (s *Syncer) Run(ctx context.Context, lead *state.Leadership) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(lead.Context(), cancel)
	defer stop()
	go func() {
		bo := backoff.New(time.Second, 30*time.Second)
		for ctx.Err() == nil {
			err := s.cfg.Store.WatchSyncTriggers(ctx, func(t state.SyncTrigger) {
				s.cfg.Log.Info("sync triggered", "from", t.From, "ref", t.Ref, "commit", t.Commit)
				s.Trigger()
			})
			if ctx.Err() != nil {
				return
			}
			s.cfg.Log.Warn("trigger watch", "err", err)
			backoff.Sleep(ctx, bo.Next())
		}
	}()
	if err := s.resume(ctx); err != nil && ctx.Err() == nil {
		s.cfg.Log.Warn("read the sync record", "err", err)
	}
	for ctx.Err() == nil {
		s.SyncOnce(ctx, lead)
		t := time.NewTimer(s.cfg.Interval)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-s.trigger:
		}
		t.Stop()
	}
	return nil
}

// resume loads the record a previous leader wrote, so the commit in force,
// the drift baseline and the corrections count carry over.
func (s *Syncer) resume(ctx context.Context) error {
	var st Status
	found, err := s.cfg.Store.ReadSyncStatus(ctx, &st)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if found {
		s.cur = st
		if st.Commit != nil {
			s.cfg.Log.Info("resuming from the recorded commit", "commit", short(st.Commit.Hash), "documents", len(st.Documents))
		}
	}
	s.publish()
	return nil
}

func (s *Syncer) publish() {
	c := s.cur
	s.last.Store(&c)
}

// SyncOnce fetches the branch and applies its head commit, finishing first
// a sync that a previous leader left cut. It returns the record written.
func (s *Syncer) SyncOnce(ctx context.Context, lead *state.Leadership) Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	src := s.cfg.Repo.Source()
	s.cur.Repo, s.cur.Path, s.cur.DriftMode = src.URL, src.Path, s.cfg.Drift
	if src.Branch != "" {
		// Else the branch the remote's HEAD named at the last fetch stays.
		s.cur.Branch = src.Branch
	}
	s.cur.LastAttempt = time.Now().UTC()
	head, err := s.cfg.Repo.Fetch(ctx)
	if err != nil {
		s.fail(ctx, lead, ResultUnreachable, "", err.Error(), nil)
		return s.cur
	}
	if head.Branch != "" {
		s.cur.Branch = head.Branch
	}
	// Up to a few rounds: a cut sync's commit first, then the head; a
	// check-and-set conflict (a hand edit between read and write) is read
	// again at once.
	for round := 0; round < 4 && ctx.Err() == nil; round++ {
		again, err := s.apply(ctx, lead, head)
		if err == nil && !again {
			break
		}
		if err != nil {
			var terr *state.TxnError
			if errors.As(err, &terr) && round < 3 {
				s.cfg.Log.Info("keys changed while syncing; reading again", "err", err)
				continue
			}
			s.fail(ctx, lead, ResultError, head.Hash, src.Redact(err), nil)
			break
		}
	}
	return s.cur
}

// apply makes the spec tree hold commit (or, when a cut sync of another
// commit is found, that one first: again is then true).
func (s *Syncer) apply(ctx context.Context, lead *state.Leadership, commit Commit) (again bool, err error) {
	docs, problems, allowEmpty, err := s.read(commit.Hash)
	noPath := errors.Is(err, errNoPath)
	if err != nil && !noPath {
		s.fail(ctx, lead, ResultInvalid, commit.Hash, err.Error(), []Problem{{File: s.cfg.Repo.Source().Path, Problem: err.Error()}})
		return false, nil
	}
	if len(problems) > 0 {
		s.cfg.Log.Warn("commit not applied: invalid documents", "commit", short(commit.Hash), "problems", len(problems), "first", problems[0].String())
		s.fail(ctx, lead, ResultInvalid, commit.Hash, fmt.Sprintf("commit %s: %d problem(s); nothing applied", short(commit.Hash), len(problems)), problems)
		return false, nil
	}
	store := s.cfg.Store
	want := make([]state.SpecDoc, 0, len(docs))
	for _, d := range docs {
		want = append(want, state.SpecDoc{Key: store.SpecKey(d.Kind, d.Name), Value: d.Raw})
	}
	plan, err := store.PlanSync(ctx, want, sameDocument)
	if err != nil {
		return false, err
	}
	if m := plan.Marker; m != nil && m.Commit != commit.Hash && m.Commit != "" && s.cfg.Repo.Has(m.Commit) {
		cut, err := s.cfg.Repo.Commit(m.Commit)
		if err == nil {
			s.cfg.Log.Info("finishing a sync cut between transactions", "commit", short(m.Commit), "started", m.Started, "by", m.Holder)
			if _, err := s.apply(ctx, lead, cut); err != nil {
				return false, err
			}
			return true, nil
		}
	}
	if len(want) == 0 && len(plan.Stored) > 0 && !allowEmpty && !s.cfg.AllowEmpty {
		what := "holds no document under"
		if noPath {
			what = "has no directory"
		}
		msg := fmt.Sprintf("commit %s %s %q and would delete all %d documents in KV; refused (add %s there, or run with --git-allow-empty, to allow it)",
			short(commit.Hash), what, "/"+s.cfg.Repo.Source().Path, len(plan.Stored), AllowEmptyMarker)
		s.cfg.Log.Warn("commit refused", "commit", short(commit.Hash), "err", msg)
		s.fail(ctx, lead, ResultRefused, commit.Hash, msg, nil)
		return false, nil
	}

	drift := s.drift(plan)
	if len(drift) > 0 {
		s.cfg.Log.Warn("spec tree edited by hand", "keys", strings.Join(drift, ","), "mode", s.cfg.Drift)
	}
	if s.cfg.Drift == DriftReport && len(drift) > 0 {
		// Keep the edits: the documents of drifted keys are what KV holds.
		kept := map[string]bool{}
		for _, k := range drift {
			kept[store.SpecPrefix()+k] = true
		}
		keep := want[:0:0]
		for _, d := range want {
			if !kept[d.Key] {
				keep = append(keep, d)
			}
		}
		for k := range kept {
			if v, ok := plan.Stored[k]; ok {
				keep = append(keep, state.SpecDoc{Key: k, Value: v})
			}
		}
		if plan, err = store.PlanSync(ctx, keep, sameDocument); err != nil {
			return false, err
		}
	}

	next := s.cur
	next.Commit = &commit
	next.Documents = make(map[string]string, len(want))
	for _, d := range want {
		next.Documents[strings.TrimPrefix(d.Key, store.SpecPrefix())] = digest(d.Value)
	}
	next.LastCommit, next.LastError, next.Problems = commit.Hash, "", nil
	next.Synced = time.Now().UTC()
	next.Drift = drift
	switch {
	case plan.Marker != nil:
		next.LastResult = ResultResumed
	case plan.Empty():
		next.LastResult = ResultUnchanged
	default:
		next.LastResult = ResultSynced
	}
	if s.cfg.Drift == DriftRevert {
		next.DriftCorrections += len(drift)
	}
	next.Transactions = 0
	txns, err := lead.CommitSync(ctx, plan, state.SyncMarker{Commit: commit.Hash, Holder: s.cfg.Holder}, &next, s.cfg.Commit)
	if err != nil {
		return false, err
	}
	next.Transactions = txns
	s.cur = next
	s.successAt.Store(time.Now().UnixNano())
	s.publish()
	if next.LastResult != ResultUnchanged {
		s.cfg.Log.Info("commit in force", "commit", short(commit.Hash), "result", next.LastResult,
			"created", len(plan.Created), "changed", len(plan.Changed), "deleted", len(plan.Pruned), "transactions", txns)
	}
	return false, nil
}

// read returns the valid documents of a commit, or its problems.
func (s *Syncer) read(hash string) ([]Doc, []Problem, bool, error) {
	files, allowEmpty, err := s.cfg.Repo.Files(hash)
	if err != nil {
		return nil, nil, false, err
	}
	docs, problems := ParseFiles(files)
	return docs, problems, allowEmpty, nil
}

// drift lists the keys (under spec/) where the spec tree differs from what
// the commit in force wrote: edited, added or deleted by hand. Nothing is
// drift before a first sync, nor while a sync is cut (the tree is then a
// mix of two commits by design).
func (s *Syncer) drift(plan *state.SyncPlan) []string {
	if s.cur.Commit == nil || s.cur.Documents == nil || plan.Marker != nil {
		return nil
	}
	prefix := s.cfg.Store.SpecPrefix()
	set := map[string]bool{}
	for k, dg := range s.cur.Documents {
		v, ok := plan.Stored[prefix+k]
		if !ok || digest(v) != dg {
			set[k] = true
		}
	}
	for full := range plan.Stored {
		k := strings.TrimPrefix(full, prefix)
		if _, ok := s.cur.Documents[k]; !ok {
			set[k] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// fail records an attempt that left the commit in force unchanged.
func (s *Syncer) fail(ctx context.Context, lead *state.Leadership, result, commit, msg string, problems []Problem) {
	s.failures.Add(1)
	s.cur.LastResult, s.cur.LastCommit, s.cur.LastError, s.cur.Problems = result, commit, msg, problems
	s.cur.Transactions = 0
	if result == ResultUnreachable || result == ResultError {
		s.cfg.Log.Warn("sync failed", "result", result, "err", msg)
	}
	if err := lead.WriteSyncStatus(ctx, &s.cur); err != nil && ctx.Err() == nil {
		s.cfg.Log.Warn("write the sync record", "err", s.cfg.Repo.Source().Redact(err))
	}
	s.publish()
}
