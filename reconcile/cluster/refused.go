package cluster

import (
	"errors"
	"fmt"
	"strings"

	"swarmvlan/reconcile/engine"
)

// RefusedError is a service spec Docker refused as invalid: the same
// document will be refused again, so it is recorded and not retried until
// the document changes. A document that validates but is refused here is a
// gap in validation.
type RefusedError struct {
	// Field is the document field Docker's words point at, or "spec" when
	// they point at none in particular.
	Field string
	Err   error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s: docker refused the service: %v", e.Field, e.Err)
}

func (e *RefusedError) Unwrap() error { return e.Err }

// MissingError is a Docker object the document names that does not exist (a
// secret): the user fixes it in Docker, not in the document, so it is
// recorded and tried again when Docker announces the object or at the
// periodic resync.
type MissingError struct {
	Kind  string // "secret" or "config"
	Name  string
	Field string // the document field naming it
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("%s: %s %q does not exist in Docker; create it (docker %s create %s …)", e.Field, e.Kind, e.Name, e.Kind, e.Name)
}

// serviceErrTerminal reports whether a service reconcile failed for a reason
// that a retry with backoff cannot fix.
func serviceErrTerminal(err error) bool {
	var conflict *engine.ConflictError
	var refused *RefusedError
	var missing *MissingError
	return errors.As(err, &conflict) || errors.As(err, &refused) || errors.As(err, &missing)
}

// refusedFields maps words in Docker's refusal to the document field they
// concern, first match wins.
var refusedFields = []struct{ word, field string }{
	{"mount", "spec.mounts"},
	{"healthcheck", "spec.healthcheck"},
	{"health", "spec.healthcheck"},
	{"resources", "spec.resources"},
	{"memory", "spec.resources"},
	{"cpu", "spec.resources"},
	{"placement", "spec.placement"},
	{"constraint", "spec.placement.constraints"},
	{"restart", "spec.restart"},
	{"update", "spec.update"},
	{"parallelism", "spec.update.parallelism"},
	{"env", "spec.env"},
	{"secret", "spec.secrets"},
	{"network", "spec.networks"},
	{"configreference", "spec.configs"},
	{"image", "spec.image"},
	{"reference", "spec.image"},
	{"label", "metadata.labels"},
}

// refused wraps Docker's refusal of a service create or update as a
// RefusedError naming the field its words point at; other errors are
// returned as they are.
func refused(err error) error {
	if !engine.IsInvalidArgument(err) {
		return err
	}
	msg := strings.ToLower(err.Error())
	field := "spec"
	for _, f := range refusedFields {
		if strings.Contains(msg, f.word) {
			field = f.field
			break
		}
	}
	return &RefusedError{Field: field, Err: err}
}
