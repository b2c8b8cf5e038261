package spec

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
)

// FieldError is one problem with a document, located by its field path
// ("spec.rangePlan.pool[1]").
type FieldError struct {
	Path string
	Msg  string
}

// Error returns "path: message", or only the message when the problem is
// with the document as a whole.
func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// ErrorList is every problem found in a document, in field order, so a user
// fixes them all in one pass instead of one per attempt.
type ErrorList []*FieldError

// Error returns one problem per line.
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find the individual FieldErrors.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// Paths returns the field path of every problem, in order.
func (l ErrorList) Paths() []string {
	paths := make([]string, len(l))
	for i, e := range l {
		paths[i] = e.Path
	}
	return paths
}

// AsErrorList returns the problems in err: the list itself for an ErrorList,
// a one-element list for a FieldError or any other error, nil for nil.
func AsErrorList(err error) ErrorList {
	if err == nil {
		return nil
	}
	var l ErrorList
	if errors.As(err, &l) {
		return l
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return ErrorList{fe}
	}
	return ErrorList{{Msg: err.Error()}}
}

// add appends a problem at path.
func (l *ErrorList) add(path, msg string) {
	*l = append(*l, &FieldError{Path: path, Msg: msg})
}

// err returns the list as an error, or a true nil when it is empty (a nil
// ErrorList stored in an error interface would not compare equal to nil).
func (l ErrorList) err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// KeyPath appends an object key to a field path: "spec.env.LOG_LEVEL" for a
// plain key, `spec.labels["io.example/tier"]` for one that holds dots or other
// characters that would make the path ambiguous.
func KeyPath(parent, key string) string {
	if !plainKey.MatchString(key) {
		return parent + "[" + strconv.Quote(key) + "]"
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// IndexPath appends a list index to a field path: "spec.rangePlan.pool[1]".
func IndexPath(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// maxErrors bounds how many problems are reported for one input: past that,
// a user learns nothing more from the list, and a hostile input could make
// it huge.
const maxErrors = 100

// truncated keeps the first maxErrors problems and says how many were left
// out.
func (l ErrorList) truncated() ErrorList {
	if len(l) <= maxErrors {
		return l
	}
	out := append(ErrorList{}, l[:maxErrors]...)
	return append(out, &FieldError{Msg: "and " + strconv.Itoa(len(l)-maxErrors) + " more problems"})
}
