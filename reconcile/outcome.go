package reconcile

import (
	"time"

	"swarmvlan/state"
)

// exit is how a reconcile ended; Outcome holds exactly one.
type exit int

const (
	exitDone     exit = iota // converged: nothing to do until the next trigger
	exitRetry                // failed: retry with backoff
	exitTerminal             // refused: recorded, retried only on a change
	exitRequeue              // wait and look again after a fixed delay
	exitPoll                 // wait and look again, the delay doubling while it lasts
	exitGone                 // fully removed: the status is deleted
)

// Outcome is the single exit of a reconcile, made by exactly one of Done,
// Retry, Terminal, RequeueAfter, Poll and Gone, so no reconcile can ask for
// two at once. Details and Conditions become the object's status whatever
// the exit.
type Outcome struct {
	Details    any
	Conditions []state.Condition

	exit  exit
	err   error
	after time.Duration
}

// Done says the object converged.
func Done() Outcome { return Outcome{} }

// Retry says the reconcile failed for a reason that may pass (Consul or
// Docker away, a race): the key is retried with capped, jittered backoff.
// A nil err is Done.
func Retry(err error) Outcome {
	if err == nil {
		return Done()
	}
	return Outcome{exit: exitRetry, err: err}
}

// Terminal says the reconcile was refused for a reason no retry can fix (a
// document Docker refuses, an object in the way that is not ours, a secret
// that does not exist): it is recorded in the status and tried again only
// when the key is queued anew, by a change of the document, a Docker event
// or the periodic resync. A nil err is Done.
func Terminal(err error) Outcome {
	if err == nil {
		return Done()
	}
	return Outcome{exit: exitTerminal, err: err}
}

// RequeueAfter says the object is waiting for something outside it: look
// again after d.
func RequeueAfter(d time.Duration) Outcome { return Outcome{exit: exitRequeue, after: d} }

// Poll is RequeueAfter for a wait on something that events usually announce:
// the delay doubles (up to two minutes) for as long as the object keeps
// waiting, so a long wait costs next to nothing.
func Poll(d time.Duration) Outcome { return Outcome{exit: exitPoll, after: d} }

// Gone says the object is fully removed, so its status is deleted.
func Gone() Outcome { return Outcome{exit: exitGone} }

// With returns o with details and conditions for the status.
func (o Outcome) With(details any, conds ...state.Condition) Outcome {
	o.Details = details
	o.Conditions = append(o.Conditions, conds...)
	return o
}

// Err is the error of a Retry or Terminal outcome, else nil.
func (o Outcome) Err() error { return o.err }

// IsTerminal reports whether o is a Terminal outcome.
func (o Outcome) IsTerminal() bool { return o.exit == exitTerminal }

// IsGone reports whether o is a Gone outcome.
func (o Outcome) IsGone() bool { return o.exit == exitGone }

// After is the wait a RequeueAfter or Poll outcome asks for, else 0.
func (o Outcome) After() time.Duration { return o.after }
