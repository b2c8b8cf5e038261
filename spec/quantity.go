package spec

import (
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"time"

	units "github.com/docker/go-units"
)

// Duration returns the parsed duration: 0 for "" and for text that does not
// parse (Validate rejects that, so a validated document never has it). The
// text is read by time.ParseDuration, as the docker CLI reads its duration
// flags (--update-delay, --health-interval, ...).
func (d Duration) Duration() time.Duration {
	if d == "" {
		return 0
	}
	t, err := time.ParseDuration(string(d))
	if err != nil {
		return 0
	}
	return t
}

// Ptr returns the duration for one of Docker's optional duration fields
// (RestartPolicy.Delay, RestartPolicy.Window): nil when the document leaves
// it out, so Docker applies its own default, else a pointer to Duration().
func (d Duration) Ptr() *time.Duration {
	if d == "" {
		return nil
	}
	t := d.Duration()
	return &t
}

// quantityRe is the grammar a document's memory quantity must follow:
// digits, an optional fraction, and an optional suffix. It is narrower than
// what go-units accepts, on purpose, so a typo gets a message naming the
// problem rather than a surprising amount: no spaces, no sign, no exponent
// ("1e9"), no leading or trailing '.', no 'p' (no host has a pebibyte of
// memory; a P is more likely a slip), no "MiB".
var quantityRe = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)([bB]|[kKmMgGtT][bB]?|[KMGT]i)?$`)

// QuantityBytes parses a memory quantity and returns its bytes, the number
// `docker service create --limit-memory` and `docker run --memory` set for
// the same text: plain bytes ("268435456"), or a number with a suffix b, k,
// m, g or t in either case, optionally followed by b or B, or one of Ki, Mi,
// Gi, Ti. Every suffix is a power of 1024, as Docker reads it, so "512m",
// "512M", "512MB" and "512Mi" are all 536870912 bytes. A fraction is allowed
// ("1.5Gi" is 1610612736) and rounded down to whole bytes.
//
// The value is computed by go-units' RAMInBytes, the function the docker
// CLI calls, so the two can never disagree; Ki..Ti, which RAMInBytes does
// not know, are read as the K..T they equal. A quantity must be at least one
// byte (leave the field out for no limit) and less than 2^63 bytes.
func QuantityBytes(s string) (int64, error) {
	m := quantityRe.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a quantity such as 256Mi, 512m, 1G or 268435456", s)
	}
	num, suffix := m[1], m[2]
	if len(suffix) == 2 && suffix[1] == 'i' {
		suffix = suffix[:1]
	}
	// RAMInBytes multiplies in float64 and converts to int64, and Go leaves
	// the result of an overflowing conversion to the platform; refuse those
	// before it gets there, computing the same float it would.
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.Ldexp(f, 10*unitPower(suffix)) >= 0x1p63 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	n, err := units.RAMInBytes(num + suffix)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	if n <= 0 {
		return 0, fmt.Errorf("%q is less than one byte", s)
	}
	return n, nil
}

// unitPower is the power of 1024 a quantity suffix stands for.
func unitPower(suffix string) int {
	if suffix == "" {
		return 0
	}
	switch lowerByte(suffix[0]) {
	case 'k':
		return 1
	case 'm':
		return 2
	case 'g':
		return 3
	case 't':
		return 4
	}
	return 0 // b
}

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// cpusRe is the grammar of a document's CPU count: a plain decimal. The
// docker CLI also takes fractions ("1/2") and exponents ("5e-1"); a
// document keeps to the form everyone reads the same way.
var cpusRe = regexp.MustCompile(`^[0-9]+(?:\.[0-9]+)?$`)

// maxCPUs bounds a CPU count: no machine has a billion CPUs, and the bound
// keeps the nano-CPUs well inside an int64.
const maxCPUs = 1e9

// CPUsNano parses a CPU count written as a decimal ("0.5", "2") into
// billionths of a CPU, the unit of Swarm's NanoCPUs. It computes what the
// docker CLI's --limit-cpu and --reserve-cpu set (opts.NanoCPUs): the exact
// rational value times 10^9, which must be a whole number ("0.5" is
// 500000000, "0.000000001" is 1, "0.0000000001" is too precise). The result
// is positive and below a billion CPUs.
func CPUsNano(s string) (int64, error) {
	if !cpusRe.MatchString(s) {
		return 0, fmt.Errorf("%q is not a decimal number of CPUs such as 0.5 or 2", s)
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return 0, fmt.Errorf("%q is not a decimal number of CPUs such as 0.5 or 2", s)
	}
	if r.Cmp(big.NewRat(maxCPUs, 1)) >= 0 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	r.Mul(r, big.NewRat(1e9, 1))
	if !r.IsInt() {
		// Docker's own words for the same refusal.
		return 0, fmt.Errorf("%q: value is too precise (at most 9 decimals)", s)
	}
	if r.Sign() <= 0 {
		return 0, fmt.Errorf("%q is not positive", s)
	}
	return r.Num().Int64(), nil
}

// Values returns what Docker's Resources and Limit take: the CPU count in
// nano-CPUs and the memory in bytes, each 0 when the field is unset (Docker's
// "no limit"); a nil list has neither. Like Duration(), it is meant for a
// document Validate accepted: a field that does not parse reads as 0.
func (l *ResourceList) Values() (nanoCPUs, memoryBytes int64) {
	if l == nil {
		return 0, 0
	}
	if l.CPUs != "" {
		nanoCPUs, _ = CPUsNano(l.CPUs)
	}
	if l.Memory != "" {
		memoryBytes, _ = QuantityBytes(l.Memory)
	}
	return nanoCPUs, memoryBytes
}
