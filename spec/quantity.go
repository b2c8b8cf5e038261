package spec

import (
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"time"
)

// Duration returns the parsed duration: 0 for "" and for text that does not
// parse (Validate rejects that, so a validated document never has it).
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

var quantityRe = regexp.MustCompile(`^([0-9]+)(?:\.([0-9]+))?([kKmMgGtT][bB]?|[KMGT]i)?$`)

// QuantityBytes parses a memory quantity: plain bytes ("268435456"), or a
// number with a suffix k, K, M, G, T (optionally followed by B) or Ki, Mi,
// Gi, Ti. Every suffix is a power of 1024, as in `docker run --memory 512m`,
// so "512M" and "512Mi" are the same amount; lowercase m, g and t are
// accepted for the same reason. A fraction is allowed ("1.5Gi") and rounded
// down to whole bytes. The result is positive.
func QuantityBytes(s string) (int64, error) {
	m := quantityRe.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a quantity such as 256Mi, 1G or 268435456", s)
	}
	var shift uint
	if m[3] != "" {
		shift = 10 * uint(strings.IndexByte("kmgt", lowerByte(m[3][0]))+1)
	}
	mult := new(big.Int).Lsh(big.NewInt(1), shift)
	whole, _ := new(big.Int).SetString(m[1], 10)
	n := new(big.Int).Mul(whole, mult)
	if frac := m[2]; frac != "" {
		f, _ := new(big.Int).SetString(frac, 10)
		f.Mul(f, mult)
		f.Quo(f, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil))
		n.Add(n, f)
	}
	if !n.IsInt64() {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if n.Sign() <= 0 {
		return 0, fmt.Errorf("%q is not positive", s)
	}
	return n.Int64(), nil
}

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

var cpusRe = regexp.MustCompile(`^([0-9]{1,9})(?:\.([0-9]{1,9}))?$`)

// CPUsNano parses a CPU count written as a decimal ("0.5", "2") into
// billionths of a CPU, the unit Swarm's NanoCPUs uses. The result is
// positive.
func CPUsNano(s string) (int64, error) {
	m := cpusRe.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a decimal number of CPUs such as 0.5 or 2", s)
	}
	var n int64
	for _, c := range m[1] {
		n = n*10 + int64(c-'0')
	}
	n *= 1e9
	frac := m[2] + strings.Repeat("0", 9-len(m[2]))
	var f int64
	for _, c := range frac {
		f = f*10 + int64(c-'0')
	}
	n += f
	if n <= 0 {
		return 0, fmt.Errorf("%q is not positive", s)
	}
	return n, nil
}
