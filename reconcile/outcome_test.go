package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// TestOutcomeExits checks what the controller does with each exit: a Retry
// comes back after its backoff, a Terminal is recorded and not retried until
// the key is queued anew, RequeueAfter comes back after its delay, and Done
// and Gone do not come back.
func TestOutcomeExits(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name     string
		out      Outcome
		comeBack bool
		err      error
	}{
		{"retry", Retry(boom), true, boom},
		{"terminal", Terminal(boom), false, boom},
		{"requeue after", RequeueAfter(30 * time.Millisecond), true, nil},
		{"poll", Poll(30 * time.Millisecond), true, nil},
		{"done", Done(), false, nil},
		{"gone", Gone(), false, nil},
		{"retry of nil is done", Retry(nil), false, nil},
		{"terminal of nil is done", Terminal(nil), false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.out.Err() != tc.err {
				t.Errorf("Err() = %v, want %v", tc.out.Err(), tc.err)
			}
			c := &Controller{View: NewView("swarmvlan/spec/"), Log: slog.New(slog.DiscardHandler)}
			calls := 0
			c.Register("Synthetic", ReconcilerFunc(func(context.Context, Key, *Doc) Outcome {
				calls++
				return tc.out
			}))
			q := NewQueue(10*time.Millisecond, 20*time.Millisecond)
			defer q.ShutDown()
			k := Key{Kind: "Synthetic", Name: "x"}
			c.process(context.Background(), q, k)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			got, back := q.Get(ctx)
			if back != tc.comeBack || (back && got != k) {
				t.Errorf("key came back: %v (%v), want %v", back, got, tc.comeBack)
			}
			if calls != 1 {
				t.Errorf("reconciled %d times, want 1", calls)
			}
		})
	}
	t.Run("with details", func(t *testing.T) {
		o := Terminal(boom).With("details")
		if !o.IsTerminal() || o.Details != "details" || o.Err() != boom {
			t.Errorf("With lost the exit or the error: %+v", o)
		}
	})
}
